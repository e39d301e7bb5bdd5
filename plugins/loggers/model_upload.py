"""Uploading checkpoint files to a logger's artifact store (Lightning's
``log_model``), for :class:`~ember.plugins.loggers.mlflow.MLflowLogger` and
:class:`~ember.plugins.loggers.wandb.WandbLogger`.

- ``log_model=True``: when training ends, the files every ``ModelCheckpoint``
  keeps (its top-k, best and last) are uploaded; with ``save_top_k=-1`` also
  each time one is written, as Lightning does.
- ``log_model="all"``: each checkpoint file is uploaded when it is written
  (after the validation or epoch end that wrote it), so checkpoints later
  replaced by better ones are uploaded too.

A file is uploaded again only when it changed (its modification time); a
checkpoint directory (``fsdp`` sharded, ``deepspeed``) is uploaded as a
directory. Only rank zero uploads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.trainer import Trainer


def checkpoint_files(trainer: Trainer) -> list[str]:
    """The checkpoint files (or directories) the trainer's ``ModelCheckpoint`` callbacks keep now."""
    found: set[str] = set()
    for callback in trainer.checkpoint_callbacks:
        found.update(str(p) for p in (getattr(callback, "best_k_models", None) or {}))
        for attr in ("best_model_path", "last_model_path"):
            path = getattr(callback, attr, "")
            if path:
                found.add(str(path))
    return sorted(p for p in found if os.path.exists(p))


class CheckpointUploader:
    """Calls ``upload(path, trainer)`` for each kept checkpoint not uploaded yet in its current state."""

    def __init__(self, mode: bool | str, upload: Callable[[str, Any], None]) -> None:
        if mode not in (True, False, "all"):
            raise ValueError(f"log_model={mode!r}: use False, True or 'all'.")
        self.mode = mode
        self.upload = upload
        self.uploaded: dict[str, float] = {}

    def _every_save(self, trainer: Trainer) -> bool:
        if self.mode == "all":
            return True
        return self.mode is True and any(getattr(c, "save_top_k", None) == -1 for c in trainer.checkpoint_callbacks)

    def after_possible_save(self, trainer: Trainer) -> None:
        if self._every_save(trainer):
            self.sync(trainer)

    def at_train_end(self, trainer: Trainer) -> None:
        if self.mode:
            self.sync(trainer)

    def sync(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero:
            return
        for path in checkpoint_files(trainer):
            stamp = os.path.getmtime(path)
            if self.uploaded.get(path) != stamp:
                self.upload(path, trainer)
                self.uploaded[path] = stamp


def checkpoint_score(trainer: Trainer, path: str) -> tuple[float | None, bool]:
    """The monitored score of the checkpoint at ``path`` (if a ``ModelCheckpoint``
    ranks it) and whether it is a best model."""
    score, best = None, False
    for callback in trainer.checkpoint_callbacks:
        value = (getattr(callback, "best_k_models", None) or {}).get(path)
        if value is not None:
            score = float(value)
        best = best or str(getattr(callback, "best_model_path", "")) == path
    return score, best


class UploadsCheckpoints:
    """The hooks of a logger with ``log_model``: its :class:`CheckpointUploader`
    (``self._uploader``) looks for new checkpoint files after every point
    where ``ModelCheckpoint`` may have written one, and at the end of training."""

    _uploader: CheckpointUploader

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        self._uploader.after_possible_save(trainer)

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        self._uploader.after_possible_save(trainer)

    def on_train_end(self, trainer: Any, module: Any) -> None:
        self._uploader.at_train_end(trainer)
