"""Where a run's dataloaders come from (arguments, DataModule, the module's
own methods), how batches are counted, and the DataModule's hooks and state."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

import ember
from ember import data


class _DM(ember.DataModule):
    def __init__(self, h: Any, seed: int = 0) -> None:
        self.h = h
        self.calls: list[str] = []
        self.counter = 0
        self.loaded: dict[str, Any] | None = None
        self.save_hyperparameters("seed")

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")

    def teardown(self, stage: str) -> None:
        self.calls.append(f"teardown:{stage}")

    def train_dataloader(self) -> Any:
        self.counter += 1
        return self.h.loader(32, 8)

    def val_dataloader(self) -> Any:
        return self.h.loader(16, 8)

    def test_dataloader(self) -> Any:
        return self.h.loader(24, 8)

    def predict_dataloader(self) -> Any:
        return self.h.loader(8, 8)

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self.counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state


def test_datamodule_hooks_and_dataloaders(h: Any, make_trainer: Any) -> None:
    dm = _DM(h)
    model = h.Regressor()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4 and model.val_calls == 2
    assert dm.trainer is trainer and trainer.datamodule is dm
    trainer.validate(model, datamodule=dm, verbose=False)
    trainer.test(model, dm, verbose=False)
    assert model.test_calls == 3
    assert len(trainer.predict(model, dm)) == 1
    assert dm.calls == [
        "prepare_data", "setup:fit", "teardown:fit",
        "prepare_data", "setup:validate", "teardown:validate",
        "prepare_data", "setup:test", "teardown:test",
        "prepare_data", "setup:predict", "teardown:predict",
    ]  # fmt: skip


def test_datamodule_state_is_checkpointed_and_restored(h: Any, make_trainer: Any, tmp_path: Any) -> None:
    dm = _DM(h, seed=7)
    trainer = make_trainer(max_epochs=1)
    trainer.fit(h.Regressor(), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "dm.ckpt")
    ckpt = torch.load(tmp_path / "dm.ckpt", weights_only=True)
    assert ckpt["datamodule"] == {"counter": 1}
    assert ckpt["datamodule_hyper_parameters"] == {"seed": 7}
    fresh = _DM(h)
    make_trainer(max_epochs=2).fit(h.Regressor(), datamodule=fresh, ckpt_path=tmp_path / "dm.ckpt")
    assert fresh.loaded == {"counter": 1}


def test_explicit_dataloaders_win_over_the_datamodule(h: Any, make_trainer: Any) -> None:
    dm = _DM(h)
    model = h.Regressor()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, h.loader(8, 8), datamodule=dm)
    assert trainer.global_step == 1 and dm.counter == 0


def test_the_modules_own_dataloaders(h: Any, make_trainer: Any) -> None:
    class Self(h.Regressor):  # type: ignore[misc, name-defined]
        def train_dataloader(self) -> Any:
            return h.loader(24, 8)

        def val_dataloader(self) -> Any:
            return [h.loader(8, 8), h.loader(16, 8)]

        def test_dataloader(self) -> Any:
            return h.loader(16, 8)

        def predict_dataloader(self) -> Any:
            return h.loader(8, 4)

    model = Self()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model)
    assert trainer.global_step == 3 and model.val_calls == 3
    assert trainer.num_val_batches == [1, 2]
    assert set(trainer.callback_metrics) >= {"val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"}
    trainer.test(model, verbose=False)
    assert model.test_calls == 2
    assert len(trainer.predict(model)) == 2


def test_no_training_data_is_a_clear_error(h: Any, make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="No training data.*train_dataloaders.*Regressor.train_dataloader"):
        make_trainer(max_epochs=1).fit(h.Regressor())


def test_several_training_dataloaders_are_combined(h: Any, make_trainer: Any) -> None:
    """A list of training dataloaders is a CombinedLoader in "max_size_cycle" mode, as in Lightning
    (tests/core/test_combined_loader.py checks the modes)."""
    seen: list[int] = []

    class Both(h.Regressor):  # type: ignore[misc, name-defined]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            first, second = batch
            seen.append(len(second[0]))
            return super().training_step(first, batch_idx)

    trainer = make_trainer(max_epochs=1)
    trainer.fit(Both(), [h.loader(16, 4), h.loader(8, 4)])
    assert trainer.global_step == 4 and seen == [4, 4, 4, 4]  # the longer one's 4 batches; the shorter cycles


def test_datamodule_that_is_not_a_datamodule(h: Any, make_trainer: Any) -> None:
    with pytest.raises(TypeError, match="datamodule must be an ember.DataModule"):
        make_trainer(max_epochs=1).fit(h.Regressor(), datamodule=object())  # type: ignore[arg-type]


def test_a_new_model_does_not_inherit_the_previous_datamodule(h: Any, make_trainer: Any) -> None:
    class OwnTest(h.Regressor):  # type: ignore[misc, name-defined]
        def test_dataloader(self) -> Any:
            return h.loader(8, 8)

    trainer = make_trainer(max_epochs=1)
    trainer.fit(h.Regressor(), datamodule=_DM(h))
    other = OwnTest()
    trainer.test(other, verbose=False)
    assert other.test_calls == 1  # its own 1-batch loader, not the DataModule's 3 batches


# --------------------------------------------------------------------------- the helpers
def test_resolve_precedence(h: Any) -> None:
    explicit, dm, module = h.loader(8, 8), _DM(h), h.Regressor()
    assert data.resolve("train", explicit, dm, module) is explicit
    assert len(data.resolve("test", None, dm, module)) == 3
    assert data.resolve("train", None, None, module) is None
    assert data.resolve("val", None, ember.DataModule(), module) is None


def test_as_list() -> None:
    a, b = DataLoader(range(4)), DataLoader(range(2))
    assert data.as_list(None) == []
    assert data.as_list(a) == [a]
    assert data.as_list([a, b]) == [a, b]
    assert data.as_list({"x": a, "y": b}) == [a, b]


class _Stream(IterableDataset):
    def __iter__(self) -> Any:
        return iter(range(10))


def test_length_and_limited() -> None:
    finite, stream = DataLoader(range(40), batch_size=4), DataLoader(_Stream(), batch_size=4)
    assert data.length(finite) == 10 and data.length(stream) == math.inf
    assert data.limited(finite, None, "x") == 10
    assert data.limited(finite, 3, "x") == 3 and data.limited(finite, 30, "x") == 10
    assert data.limited(finite, 0.35, "x") == 3 and data.limited(finite, 0.0, "x") == 0
    assert data.limited(finite, 2.0, "x") == 2  # an integral float above 1 counts batches
    assert data.limited(stream, 1.0, "x") == math.inf and data.limited(stream, 5, "x") == 5
    with pytest.raises(TypeError, match="x must be an int or a float, not a bool"):
        data.limited(finite, True, "x")
    with pytest.raises(ValueError, match="x=-0.5"):
        data.limited(finite, -0.5, "x")
    with pytest.raises(ValueError, match="less than one batch"):
        data.limited(finite, 0.05, "x")


def test_sequential() -> None:
    shuffled = DataLoader(range(10), batch_size=3, shuffle=True, drop_last=True)
    seq = data.sequential(shuffled)
    assert isinstance(seq.sampler, SequentialSampler)
    assert (seq.batch_size, seq.drop_last) == (3, True)
    assert [b.tolist() for b in seq] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    plain = DataLoader(range(4))
    assert data.sequential(plain) is plain
