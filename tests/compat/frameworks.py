"""The two frameworks a corpus module runs under, as namespaces.

A corpus module is written once against ``fw`` (``fw.LightningModule``,
``fw.Trainer``, ``fw.callbacks.ModelCheckpoint``, ...), which is what a
ported project looks like after changing its imports: ``ember`` names on one
side, ``lightning.pytorch`` (or ``pytorch_lightning``) names on the other.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

import torch


def _first_module(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def lightning() -> types.SimpleNamespace | None:
    pl = _first_module("lightning.pytorch", "pytorch_lightning")
    if pl is None:
        return None
    return types.SimpleNamespace(
        name="lightning",
        LightningModule=pl.LightningModule,
        LightningDataModule=pl.LightningDataModule,
        Trainer=pl.Trainer,
        Callback=pl.Callback,
        callbacks=pl.callbacks,
        loggers=pl.loggers,
        Logger=pl.loggers.Logger,
        rank_zero_only=pl.utilities.rank_zero_only,
        seed_everything=lambda seed: pl.seed_everything(seed, verbose=False),
        trainer_args={"accelerator": "cpu", "devices": 1},
    )


def ember_fw() -> types.SimpleNamespace:
    # Lightning-shaped namespaces: a ported project imports from these.
    import ember.callbacks
    import ember.loggers
    import ember.utilities

    return types.SimpleNamespace(
        name="ember",
        LightningModule=ember.Module,
        LightningDataModule=ember.DataModule,
        Trainer=ember.Trainer,
        Callback=ember.Callback,
        callbacks=ember.callbacks,
        loggers=ember.loggers,
        Logger=ember.Logger,
        rank_zero_only=ember.utilities.rank_zero_only,
        seed_everything=ember.seed_everything,
        trainer_args={"accelerator": "cpu", "devices": 1},
    )


QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def trainer(fw: Any, **kwargs: Any) -> Any:
    """A CPU trainer with no progress bar or summary; no logger or checkpoints unless asked."""
    args = {**fw.trainer_args, **QUIET, "logger": False, "enable_checkpointing": False, **kwargs}
    return fw.Trainer(**args)


def recording_logger(fw: Any) -> Any:
    """A logger that keeps every ``log_metrics`` call as ``(step, {name: value})``."""
    if fw.name == "ember":

        class Recording(fw.Logger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                self.calls: list[tuple[int, dict[str, float]]] = []

            def log_metrics(self, metrics: dict[str, float], step: int) -> None:
                self.calls.append((step, dict(metrics)))

        return Recording()

    class LightningRecording(fw.Logger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[int, dict[str, float]]] = []

        @property
        def name(self) -> str:
            return "recording"

        @property
        def version(self) -> int:
            return 0

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.calls.append((step, {k: float(v) for k, v in metrics.items()}))

    return LightningRecording()


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
