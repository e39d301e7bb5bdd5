"""``LearningRateMonitor``: log each optimizer's learning rate (and optionally
momentum and weight decay) to the trainer's loggers.

Names: ``lr-{OptimizerClass}``, or the scheduler config's ``name`` when one
was given; ``/pg{i}`` (1-based, or the group's own ``"name"``) is appended
when an optimizer has several parameter groups; a second optimizer of the
same class gets ``-1`` appended, a third ``-2`` and so on.

When: with ``logging_interval="step"`` every ``trainer.log_every_n_steps``
optimizer steps (from ``on_train_batch_start``, i.e. the rate the coming step
will use); with ``"epoch"`` at the start of each epoch; with ``None`` each
optimizer at its scheduler's interval, and at epoch starts for optimizers
without a scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.roles import did_you_mean

if TYPE_CHECKING:
    import torch

    from ember.module import Module
    from ember.trainer import Trainer


class NoLoggerError(RuntimeError):
    """LearningRateMonitor was used on a trainer without loggers."""


class _Tracked:
    """One optimizer to report on."""

    def __init__(self, optimizer: torch.optim.Optimizer, base: str, interval: str) -> None:
        self.optimizer = optimizer
        self.base = base
        self.interval = interval
        self.names: list[str] = []  # one per parameter group


class LearningRateMonitor(Callback):
    """Log learning rates while training.

    :param logging_interval: ``"step"``, ``"epoch"`` or ``None`` (follow each
        scheduler's own interval).
    :param log_momentum: also log ``{name}-momentum`` (``betas[0]`` for Adam-like optimizers).
    :param log_weight_decay: also log ``{name}-weight_decay``.
    """

    def __init__(self, logging_interval: str | None = None, log_momentum: bool = False, log_weight_decay: bool = False) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise ValueError(
                f"LearningRateMonitor(logging_interval={logging_interval!r}) must be 'step', 'epoch' or None."
                f"{did_you_mean(str(logging_interval), ['step', 'epoch'])}"
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}
        self._tracked: list[_Tracked] = []
        self._last_step_logged = -1

    # ------------------------------------------------------------------ set-up
    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        if not getattr(trainer, "loggers", None):
            raise NoLoggerError(
                "LearningRateMonitor has nowhere to write: the Trainer has no logger. "
                "Pass one (e.g. Trainer(logger=CSVLogger(...))) or remove the LearningRateMonitor."
            )
        self._tracked = self._find_optimizers(trainer)
        self._last_step_logged = -1
        self.lrs = {name: [] for t in self._tracked for name in t.names}

    def _find_optimizers(self, trainer: Trainer) -> list[_Tracked]:
        optimizers = list(getattr(trainer, "optimizers", None) or [])
        configs = list(getattr(trainer, "lr_scheduler_configs", None) or [])

        def index_of(opt: Any) -> int | None:
            for i, o in enumerate(optimizers):
                if o is opt:
                    return i
            return None

        # Per optimizer: the scheduler config that names / times it (first wins).
        config_for: dict[int, Any] = {}
        for cfg in configs:
            idx = getattr(cfg, "opt_idx", None)
            if idx is None:
                idx = index_of(getattr(getattr(cfg, "scheduler", None), "optimizer", None))
            if idx is None:
                opt = getattr(getattr(cfg, "scheduler", None), "optimizer", None)
                if opt is None:
                    continue
                optimizers.append(opt)
                idx = len(optimizers) - 1
            config_for.setdefault(idx, cfg)

        tracked: list[_Tracked] = []
        seen_bases: dict[str, int] = {}
        for i, opt in enumerate(optimizers):
            cfg = config_for.get(i)
            base = getattr(cfg, "name", None) if cfg is not None else None
            if not base:
                base = f"lr-{type(opt).__name__}"
            count = seen_bases.get(base, 0)
            seen_bases[base] = count + 1
            if count:
                base = f"{base}-{count}"
            if self.logging_interval is not None:
                interval = self.logging_interval
            elif cfg is not None:
                interval = getattr(cfg, "interval", "epoch") or "epoch"
            else:
                interval = "epoch"
            t = _Tracked(opt, base, interval)
            groups = opt.param_groups
            if len(groups) == 1:
                t.names = [base]
            else:
                t.names = [f"{base}/{g['name']}" if g.get("name") else f"{base}/pg{j + 1}" for j, g in enumerate(groups)]
            tracked.append(t)
        return tracked

    # ------------------------------------------------------------------ logging
    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
        if not self._tracked:
            return
        step = trainer.global_step
        every = max(int(getattr(trainer, "log_every_n_steps", 1) or 1), 1)
        if step == self._last_step_logged or step % every != 0:
            return
        if not any(t.interval == "step" for t in self._tracked):
            return
        self._last_step_logged = step
        self._log(trainer, "step")

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if self._tracked and any(t.interval == "epoch" for t in self._tracked):
            self._log(trainer, "epoch")

    def _log(self, trainer: Trainer, interval: str) -> None:
        stats: dict[str, float] = {}
        for t in self._tracked:
            if t.interval != interval:
                continue
            for name, group in zip(t.names, t.optimizer.param_groups, strict=False):
                lr = float(group["lr"])
                stats[name] = lr
                self.lrs.setdefault(name, []).append(lr)
                if self.log_momentum:
                    stats[f"{name}-momentum"] = _momentum(group)
                if self.log_weight_decay:
                    stats[f"{name}-weight_decay"] = float(group.get("weight_decay", 0.0) or 0.0)
        if stats:
            trainer.log_metrics(stats, step=trainer.global_step)


def _momentum(group: dict[str, Any]) -> float:
    if "betas" in group:
        return float(group["betas"][0])
    return float(group.get("momentum", 0.0) or 0.0)


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "lr_monitor", LearningRateMonitor)
