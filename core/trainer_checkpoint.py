"""The Trainer's checkpoints, kept out of ``trainer.py``: ``save_checkpoint``,
what the loop state in a checkpoint holds, where ``ckpt_path="best"``/``"last"``
point, and restoring a checkpoint into the trainer (what goes into a
checkpoint and how it is read back is :mod:`ember.checkpointing`'s)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from ember import checkpointing
from ember.loops.position import position_from_state, position_state
from ember.results import to_float

if TYPE_CHECKING:
    from ember.callback import Callback


class TrainerCheckpointMixin:
    """Mixed into :class:`ember.Trainer`."""

    def save_checkpoint(self, filepath: str | os.PathLike[str], weights_only: bool | None = None, storage_options: Any = None) -> None:
        """Write a checkpoint of the current state to ``filepath`` (atomically);
        ``weights_only`` leaves out optimizer and loop state. ``storage_options``
        must be ``None`` (the checkpoint IO takes no options)."""
        if self.module is None:
            raise RuntimeError("save_checkpoint() needs a module: call it during or after fit/validate/test.")
        if storage_options is not None:
            raise TypeError(f"save_checkpoint(storage_options={storage_options!r}): ember's checkpoint IO takes no storage options; pass None.")
        checkpoint = checkpointing.dump(self, bool(weights_only))
        self.strategy.save_checkpoint(checkpoint, os.fspath(filepath))
        self.strategy.barrier("save_checkpoint")

    def _stateful_observers(self) -> list[Callback]:
        return [*self.callbacks, *self.loggers]

    def _loop_state(self) -> dict[str, Any]:
        return {
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            **position_state(self),
            "callback_metrics": {
                k: to_float(v)
                for k, v in self.callback_metrics.items()
                if isinstance(v, (int, float)) or getattr(v, "numel", lambda: 0)() == 1
            },
        }

    def _resolve_ckpt_path(self, ckpt_path: str | None, stage: str) -> str | None:
        if ckpt_path is None:
            return None
        if ckpt_path in ("best", "last"):
            # In memory after this trainer trained, else from the records on disk (a new process).
            return checkpointing.resolve_named_checkpoint(self, ckpt_path, stage)
        return os.fspath(ckpt_path)

    def _restore(self, checkpoint: dict[str, Any], path: str, full: bool) -> None:
        checkpointing.restore_module(self, checkpoint, path, strict=self.module.strict_loading)  # type: ignore[union-attr]
        self._ckpt_path = path
        if not full:
            return
        checkpointing.restore_training_state(self, checkpoint, path)
        loop = checkpoint.get("loops", {}).get("fit", {})
        self.global_step = int(loop.get("global_step", checkpoint.get("global_step", 0)))
        self.current_epoch = int(loop.get("epoch", checkpoint.get("epoch", 0)))
        self.state.position = position_from_state(loop, self.global_rank, self.world_size)
        self.state.callback_metrics.update({k: torch.tensor(v) for k, v in loop.get("callback_metrics", {}).items()})
        self._resuming = True
