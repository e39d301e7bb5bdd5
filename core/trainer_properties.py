"""The Trainer's public, read-only view of its configuration and run, kept
out of ``trainer.py``: the callbacks in firing order, the loggers' directory,
the process's rank, the stage booleans, the metrics and the batch counts
(the properties plugins rely on; see ``docs/architecture.md``). The counters
and ``should_stop`` are :class:`ember.loops.state.RunStateView`'s."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from ember.results import to_float
from ember.roles import StopsTraining

if TYPE_CHECKING:
    from ember.callback import Callback, Logger
    from ember.module import Module


class TrainerProperties:
    """Mixed into :class:`ember.Trainer`; reads only what the trainer holds."""

    @property
    def callbacks(self) -> list[Callback]:
        """Every callback of this trainer, in firing order (loggers excluded)."""
        module_types = {type(cb) for cb in self._module_callbacks}
        ordered = [cb for cb in self._user_callbacks if type(cb) not in module_types] + self._module_callbacks
        ordered += [cb for cb in self._default_callbacks if cb.fills not in {c.fills for c in ordered if c.fills}]
        # Checkpointing last, so it sees everything the other callbacks logged.
        return [cb for cb in ordered if cb.fills != "model_checkpoint"] + [cb for cb in ordered if cb.fills == "model_checkpoint"]

    @property
    def resume_checkpoint_path(self) -> str:
        """Where a preempted run saves, and where ``auto_resume`` looks: a fixed
        path under ``default_root_dir``, so a relaunch of the same command finds it."""
        return os.path.join(self.default_root_dir, "checkpoints", "resume.ckpt")

    @property
    def lightning_module(self) -> Module | None:
        return self.module

    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str:
        for lg in self.loggers:
            if lg.log_dir:
                return lg.log_dir
        return self.default_root_dir

    @property
    def checkpoint_callbacks(self) -> list[Callback]:
        return [cb for cb in self.callbacks if cb.fills == "model_checkpoint"]

    @property
    def checkpoint_callback(self) -> Callback | None:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callback(self) -> Callback | None:
        """The first callback that can stop training early (a :class:`~ember.roles.StopsTraining`)."""
        return next((cb for cb in self.callbacks if isinstance(cb, StopsTraining)), None)

    @property
    def progress_bar_callback(self) -> Callback | None:
        return next((cb for cb in self.callbacks if cb.fills == "progress_bar"), None)

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def training(self) -> bool:
        return self.state.stage == "train"

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == "sanity_check"

    @property
    def validating(self) -> bool:
        return self.state.stage == "validate"

    @property
    def testing(self) -> bool:
        return self.state.stage == "test"

    @property
    def predicting(self) -> bool:
        return self.state.stage == "predict"

    @property
    def callback_metrics(self) -> dict[str, Any]:
        """Latest value of everything logged (tensors; nothing is synchronised to read them)."""
        metrics = dict(self.state.callback_metrics)
        if self.state.train_results is not None:
            metrics.update(self.state.train_results.live_metrics())
        return metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """``prog_bar=True`` metrics as floats. Converting synchronises with the
        device, so read this only when displaying."""
        merged: dict[str, Any] = dict(self.state.last_eval_progress)
        for results in (self.state.train_results, self.state.eval_results):
            if results is not None:
                merged.update(results.progress_bar_metrics())
        return {k: to_float(v) for k, v in merged.items()}

    @property
    def estimated_stepping_batches(self) -> float:
        """Optimizer steps the whole fit will take (``inf`` when unknowable)."""
        per_epoch = (
            math.ceil(self.num_training_batches / self.accumulate_grad_batches) if self.num_training_batches != math.inf else math.inf
        )
        by_epochs = per_epoch * self.max_epochs if self.max_epochs != -1 else math.inf
        return min(by_epochs, self.max_steps) if self.max_steps != -1 else by_epochs
