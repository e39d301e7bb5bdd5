"""Every Trainer argument value that Lightning refuses at construction, ember
refuses at construction too (with its own one-line message)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import ember
from ember.trainer_args import TrainerArgumentError, UnknownTrainerArgument

pl = pytest.importorskip("pytorch_lightning", reason="PyTorch Lightning is not installed (pip install -e '.[dev]')")

from test_trainer_args import BAD  # noqa: E402

LIGHTNING_REFUSES = BAD[: BAD.index(("accumulate_grad_batches", 0, "an int >= 1"))]


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, v, _ in LIGHTNING_REFUSES], ids=[f"{n}={v!r}" for n, v, _ in LIGHTNING_REFUSES])
def test_refused_by_both(tmp_path: Any, name: str, value: Any) -> None:
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError, pl.utilities.exceptions.MisconfigurationException)):
            pl.Trainer(accelerator="cpu", **quiet, **{name: value})
    with pytest.raises(TrainerArgumentError, match=rf"^Trainer\({name}="):
        ember.Trainer(accelerator="cpu", **quiet, **{name: value})


def test_misspelt_argument_refused_by_both() -> None:
    with pytest.raises(TypeError):
        pl.Trainer(max_epoch=3)
    with pytest.raises(UnknownTrainerArgument, match="Did you mean max_epochs=3"):
        ember.Trainer(max_epoch=3)
