"""An epoch without training batches stops ``fit`` with a message, instead of
repeating empty epochs until ``max_steps`` (which they never reach)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

# Each of these looped forever before: the timeout turns a regression into a failure.
pytestmark = pytest.mark.timeout(60)


class _Nothing(IterableDataset):
    def __iter__(self) -> Iterator[Any]:
        return iter(())


def _fit(h: Any, trainer: Any, train: Any) -> tuple[Any, str]:
    module = h.Regressor()
    with pytest.warns(UserWarning, match="Trainer.fit stopped: no training batches") as record:
        trainer.fit(module, train)
    messages = [str(w.message) for w in record if "Trainer.fit stopped" in str(w.message)]
    assert len(messages) == 1
    assert trainer.global_step == 0 and module.train_batches == []
    return module, messages[0]


def test_limit_train_batches_zero(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_steps=5, limit_train_batches=0)
    _, message = _fit(h, trainer, h.loader(16, 4))
    assert message == (
        "Trainer.fit stopped: no training batches: limit_train_batches=0 selects none; "
        "set limit_train_batches to a number of batches >= 1 or a fraction in (0, 1] to train."
    )
    assert trainer.current_epoch == 0


def test_limit_train_batches_negative_set_after_construction(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_steps=5)
    trainer.limit_train_batches = -1  # refused by Trainer(...); a plugin or user could still set it
    _, message = _fit(h, trainer, h.loader(16, 4))
    assert "limit_train_batches=-1 selects none" in message


def test_empty_training_loader(h: Any, make_trainer: Any) -> None:
    empty = DataLoader(TensorDataset(torch.zeros(3, 4), torch.zeros(3, 1)), batch_size=4, drop_last=True)
    assert len(empty) == 0
    trainer = make_trainer(max_steps=5)
    _, message = _fit(h, trainer, empty)
    assert message == (
        "Trainer.fit stopped: no training batches: the training dataloader is empty (len 0); "
        "check the dataset and batch size (drop_last=True with fewer samples than batch_size yields no batch)."
    )


def test_loader_without_length_that_yields_nothing(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_steps=5, max_epochs=-1)
    _, message = _fit(h, trainer, DataLoader(_Nothing(), batch_size=2))
    assert message.startswith("Trainer.fit stopped: no training batches: the training dataloader yielded no batch in epoch 0")
    assert trainer.current_epoch == 1  # the one empty epoch ran, with its hooks


def test_a_loader_that_runs_dry_after_training_stops_there(h: Any, make_trainer: Any) -> None:
    """A one-shot iterable: the first epoch trains, the second finds it exhausted."""

    class OneShot(IterableDataset):
        def __init__(self) -> None:
            self.data = iter(h.regression_data(16))

        def __iter__(self) -> Iterator[Any]:
            return self.data

    trainer = make_trainer(max_steps=100, max_epochs=-1)
    module = h.Regressor()
    with pytest.warns(UserWarning, match="yielded no batch in epoch 1"):
        trainer.fit(module, DataLoader(OneShot(), batch_size=4))
    assert trainer.global_step == 4 and trainer.current_epoch == 2


def test_an_ordinary_fit_gives_no_such_message(h: Any, make_trainer: Any, recwarn: Any) -> None:
    trainer = make_trainer(max_epochs=2)
    trainer.fit(h.Regressor(), h.loader(16, 4))
    assert trainer.global_step == 8
    assert not [w for w in recwarn if "no training batches" in str(w.message)]
