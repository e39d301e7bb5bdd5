"""Trainer arguments: unknown names get the closest valid one, and every value
is checked at construction against the table in ``ember.trainer_args``."""

from __future__ import annotations

import datetime
import inspect
from typing import Any

import pytest

import ember
from ember.errors import UserError
from ember.trainer_args import ARGUMENTS, TrainerArgumentError, UnknownTrainerArgument


def _params() -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(ember.Trainer.__init__).parameters.items() if n != "self"}


def test_every_argument_has_a_row_in_the_table() -> None:
    params = _params()
    missing = sorted(set(params) - set(ARGUMENTS))
    assert not missing, f"add a row to ember.trainer_args.ARGUMENTS for {missing}"


@pytest.mark.parametrize("name", sorted(_params()))
def test_defaults_are_accepted(name: str) -> None:
    assert ARGUMENTS[name](_params()[name].default), f"the default of {name} fails its own check"


def test_misspelt_argument_names_the_closest() -> None:
    with pytest.raises(UnknownTrainerArgument) as info:
        ember.Trainer(max_epoch=3)
    assert str(info.value) == "Trainer() has no argument 'max_epoch'. Did you mean max_epochs=3?"
    assert isinstance(info.value, UserError) and isinstance(info.value, TypeError)  # Python's own type for it, too
    with pytest.raises(UnknownTrainerArgument, match="no argument 'acumulate_grad_batches'. Did you mean accumulate_grad_batches=2"):
        ember.Trainer(acumulate_grad_batches=2)


def test_unlike_anything_lists_the_arguments() -> None:
    with pytest.raises(UnknownTrainerArgument, match=r"no argument 'zzz'\. The arguments are: accelerator, accumulate_grad_batches, "):
        ember.Trainer(zzz=1)


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(UnknownTrainerArgument, match=r"keyword arguments only, e\.g\. Trainer\(max_epochs=3\)"):
        ember.Trainer(3)  # type: ignore[misc]


def test_a_subclass_keeps_its_own_arguments(tmp_path: Any) -> None:
    class MyTrainer(ember.Trainer):
        def __init__(self, extra: int = 0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.extra = extra

    class Strict(ember.Trainer):
        def __init__(self, *, extra: int = 0, max_epochs: int | None = None) -> None:
            super().__init__(max_epochs=max_epochs, default_root_dir=tmp_path, logger=False)

    assert MyTrainer(extra=2, max_epochs=1, default_root_dir=tmp_path, logger=False).extra == 2
    with pytest.raises(UnknownTrainerArgument, match="MyTrainer\\(\\) has no argument 'max_epoch'"):
        MyTrainer(max_epoch=1)  # reaches Trainer.__init__ through **kwargs
    with pytest.raises(UnknownTrainerArgument, match="Strict\\(\\) has no argument 'extr'. Did you mean extra=1"):
        Strict(extr=1)


BAD = [
    # (argument, value, what the message must say is valid); every one of these also fails in Lightning
    ("max_epochs", -5, "an int >= 0, or -1 for no limit"),
    ("max_steps", -2, "an int >= 0, or -1 for no limit"),
    ("limit_train_batches", -1, "an int >= 0 (batches) or a float in [0.0, 1.0]"),
    ("limit_val_batches", 1.5, "an int >= 0 (batches) or a float in [0.0, 1.0]"),
    ("limit_test_batches", -3, "an int >= 0 (batches)"),
    ("limit_predict_batches", 2.5, "a float in [0.0, 1.0]"),
    ("overfit_batches", -1, "an int >= 0 (batches)"),
    ("fast_dev_run", -1, "a bool or an int >= 0"),
    ("num_nodes", 0, "an int >= 1"),
    ("devices", 0, "'auto', -1 (all), a count >= 1"),
    ("gradient_clip_algorithm", "l2", "'norm' or 'value'"),
    ("gradient_clip_val", "1", "a number >= 0"),
    ("check_val_every_n_epoch", 1.5, "an int >= 1, or None"),
    ("val_check_interval", 1.5, "an int >= 1 (every that many training batches) or a float in (0.0, 1.0]"),
    ("max_time", "1h", "'DD:HH:MM:SS'"),
    # stricter than Lightning, which accepts these and then fails (or misbehaves) later
    ("accumulate_grad_batches", 0, "an int >= 1"),
    ("num_sanity_val_steps", -2, "an int >= 0, or -1 for all"),
    ("log_every_n_steps", 0, "an int >= 1"),
    ("min_epochs", -1, "an int >= 0"),
    ("min_steps", -1, "an int >= 0"),
    ("deterministic", "sometimes", "True, False or 'warn'"),
    ("max_time", datetime.timedelta(seconds=-1), "a duration >= 0"),
    ("enable_checkpointing", "yes", "True or False"),
    ("disable_plugins", "csv", "a list of plugin names"),
    ("logger", 3, "True, False, an ember.Logger or a list of them"),
]


@pytest.mark.parametrize(("name", "value", "valid"), BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_bad_values_are_refused_at_construction(tmp_path: Any, name: str, value: Any, valid: str) -> None:
    with pytest.raises(TrainerArgumentError) as info:
        ember.Trainer(default_root_dir=tmp_path, **{name: value})
    message = str(info.value)
    assert message.startswith(f"Trainer({name}={value!r}) is not valid: {name} takes ")
    assert valid in message
    assert "\n" not in message
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_combinations(tmp_path: Any) -> None:
    with pytest.raises(TrainerArgumentError, match=r"Trainer\(min_epochs=5, max_epochs=2\): training cannot run more epochs"):
        ember.Trainer(min_epochs=5, max_epochs=2, default_root_dir=tmp_path)
    with pytest.raises(TrainerArgumentError, match=r"Trainer\(min_steps=9, max_steps=3\)"):
        ember.Trainer(min_steps=9, max_steps=3, default_root_dir=tmp_path)
    with pytest.raises(TrainerArgumentError, match=r"check_val_every_n_epoch=None, val_check_interval=0.5\) .* must be an int"):
        ember.Trainer(check_val_every_n_epoch=None, val_check_interval=0.5, default_root_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_epochs=-1, max_steps=10),
        dict(max_epochs=0),
        dict(limit_train_batches=0, limit_val_batches=1.0, limit_test_batches=3, limit_predict_batches=2.0),
        dict(overfit_batches=0.25, fast_dev_run=True),
        dict(val_check_interval=3, check_val_every_n_epoch=None, num_sanity_val_steps=-1),
        dict(max_time={"minutes": 1}, deterministic="warn", gradient_clip_val=0.5, gradient_clip_algorithm="value"),
        dict(devices=[0], disable_plugins=[], max_time="00:00:01:00"),
    ],
)
def test_good_values_pass(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    ember.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, accelerator="cpu", **kwargs)


def test_a_subclass_may_take_positional_arguments(tmp_path: Any) -> None:
    class Configured(ember.Trainer):
        def __init__(self, epochs: int, **kwargs: Any) -> None:
            super().__init__(max_epochs=epochs, **kwargs)

    assert Configured(2, default_root_dir=tmp_path, logger=False).max_epochs == 2
    with pytest.raises(UnknownTrainerArgument, match="takes at most 1 positional arguments"):
        Configured(2, 3)  # type: ignore[call-arg]
