"""``EarlyStopping``: stop ``fit`` when a monitored metric stops improving.

When it checks: at the end of every validation run of ``fit`` (never during
the sanity check); at the end of a training epoch when the fit has no
validation; always at the end of the training epoch (and never at
validation end) with ``check_on_train_epoch_end=True``; only at validation
end with ``False``.

Why it stops, checked in this order: the value is not finite
(``check_finite``); it went past ``stopping_threshold`` (good enough); it
went past ``divergence_threshold`` (hopeless); it has not improved by more
than ``min_delta`` for ``patience`` checks in a row.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.plugins.callbacks.model_checkpoint import has_validation, missing_metric_error
from ember.suggest import did_you_mean

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

#: Values of :attr:`EarlyStopping.stopping_reason`.
NOT_STOPPED = None
PATIENCE_EXHAUSTED = "patience_exhausted"
STOPPING_THRESHOLD = "stopping_threshold"
DIVERGENCE_THRESHOLD = "divergence_threshold"
NON_FINITE = "non_finite"


class EarlyStopping(Callback):
    """Set ``trainer.should_stop`` when ``monitor`` stops improving.

    :param monitor: name of a logged metric.
    :param min_delta: an improvement smaller than this does not count.
    :param patience: how many checks in a row without improvement to accept.
    :param verbose: print a line when the metric improves and when stopping
        (on every process, tagged with its rank, unless ``log_rank_zero_only``).
    :param mode: ``"min"`` or ``"max"``: which direction is better.
    :param strict: raise when ``monitor`` was not logged (else warn and skip).
    :param check_finite: stop when the metric becomes NaN or infinite.
    :param stopping_threshold: stop as soon as the metric is better than this.
    :param divergence_threshold: stop as soon as the metric is worse than this.
    :param check_on_train_epoch_end: see the module docstring.
    """

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        if not monitor or not isinstance(monitor, str):
            raise ValueError("EarlyStopping needs the name of the metric to monitor, e.g. EarlyStopping(monitor='val_loss').")
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping(mode={mode!r}) must be 'min' or 'max'.{did_you_mean(mode, ['min', 'max'])}")
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping(patience={patience!r}) must be a non-negative int.")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.verbose = verbose
        self.log_rank_zero_only = log_rank_zero_only
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self._check_on_train_epoch_end = check_on_train_epoch_end

        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = math.inf if mode == "min" else -math.inf
        self.stopping_reason: str | None = NOT_STOPPED
        self.stopping_reason_message: str | None = None

        self._validated_epoch = -1
        self._checked_epoch = -1
        self._validation_ran = False
        self._warned_missing = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def __repr__(self) -> str:
        return f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, patience={self.patience}, min_delta={self.min_delta})"

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage == "fit":
            self._validated_epoch = -1
            self._checked_epoch = -1
            self._validation_ran = False

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        epoch = trainer.current_epoch
        self._validation_ran = True
        self._validated_epoch = epoch
        if self._check_on_train_epoch_end is True:
            return
        if self._check_on_train_epoch_end is None and self.monitor not in trainer.callback_metrics:
            return  # maybe a training-epoch metric: on_train_epoch_end decides (and complains)
        self._checked_epoch = epoch
        self._run_check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if self._check_on_train_epoch_end is False:
            return
        epoch = trainer.current_epoch
        if self._check_on_train_epoch_end is None:
            if self._checked_epoch == epoch:
                return
            if self._validated_epoch != epoch and (self._validation_ran or has_validation(trainer)):
                return  # validation will bring a fresh value; don't count a stale one
        self._checked_epoch = epoch
        self._run_check(trainer)

    # ------------------------------------------------------------------ the check
    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _run_check(self, trainer: Trainer) -> None:
        if trainer.fast_dev_run:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            error = missing_metric_error(f"EarlyStopping(monitor={self.monitor!r})", self.monitor, metrics)
            if self.strict:
                raise error
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(f"{error} (strict=False: the check is skipped.)", UserWarning, stacklevel=2)
            return
        value = metrics[self.monitor]
        current = float(value.item() if hasattr(value, "item") else value)
        should_stop, reason, message = self._evaluate(current)
        if trainer.world_size > 1:
            should_stop = bool(trainer.strategy.broadcast(should_stop, 0))
        if should_stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason = reason
            self.stopping_reason_message = message
        if message and self.verbose:
            world_size, rank = trainer.world_size, trainer.global_rank
            if rank == 0 or not self.log_rank_zero_only:
                # Every rank says it (tagged with its rank) unless log_rank_zero_only, as in Lightning.
                print(f"EarlyStopping: {message}" if world_size == 1 else f"[rank: {rank}] EarlyStopping: {message}", flush=True)

    def _evaluate(self, current: float) -> tuple[bool, str | None, str | None]:
        m = self.monitor
        if self.check_finite and not math.isfinite(current):
            return True, NON_FINITE, f"{m} = {current} is not finite; the best value was {self.best_score:.5g}. Stopping."
        if self.stopping_threshold is not None and self._better(current, self.stopping_threshold):
            sign = "<" if self.mode == "min" else ">"
            return True, STOPPING_THRESHOLD, f"{m} = {current:.5g} {sign} stopping_threshold {self.stopping_threshold}. Stopping."
        if self.divergence_threshold is not None and self._better(self.divergence_threshold, current):
            sign = ">" if self.mode == "min" else "<"
            return True, DIVERGENCE_THRESHOLD, f"{m} = {current:.5g} {sign} divergence_threshold {self.divergence_threshold}. Stopping."
        if self._improved(current):
            previous = self.best_score
            self.best_score = current
            self.wait_count = 0
            if math.isfinite(previous):
                return False, None, f"{m} improved by {abs(previous - current):.5g} to {current:.5g}."
            return False, None, f"{m} = {current:.5g} (first value)."
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return (
                True,
                PATIENCE_EXHAUSTED,
                f"{m} did not improve by more than {self.min_delta} in the last {self.wait_count} checks; best {self.best_score:.5g}. Stopping.",
            )
        return False, None, None

    def _improved(self, current: float) -> bool:
        if self.mode == "min":
            return current < self.best_score - self.min_delta
        return current > self.best_score + self.min_delta

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": float(self.best_score),
            "patience": self.patience,
            "stopping_reason": self.stopping_reason,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = int(state_dict.get("wait_count", 0))
        self.stopped_epoch = int(state_dict.get("stopped_epoch", 0))
        best = state_dict.get("best_score")
        if best is not None:
            self.best_score = float(best)
        self.patience = int(state_dict.get("patience", self.patience))
        self.stopping_reason = state_dict.get("stopping_reason")
        self.stopping_reason_message = state_dict.get("stopping_reason_message")


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "early_stopping", EarlyStopping)
