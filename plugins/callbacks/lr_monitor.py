"""``LearningRateMonitor``: log each optimizer's learning rate (and optionally
momentum and weight decay) to the trainer's loggers.

Names: ``lr-{OptimizerClass}``, or the scheduler config's ``name`` when one
was given; ``/pg{i}`` (1-based, or the group's own ``"name"``) is appended
when an optimizer has several parameter groups; a second optimizer of the
same class gets ``-1`` appended, a third ``-2`` and so on.

When (as Lightning): at the start of a training batch whose step will make
``global_step`` a multiple of ``trainer.log_every_n_steps`` (logged at the
step count before it), unless ``logging_interval="epoch"``; and at the start
of each epoch, unless ``logging_interval="step"``. With ``None`` an optimizer
with a scheduler is logged at its scheduler's interval only, and one without
a scheduler at both. Names are recomputed each time, so a parameter group
added during training (e.g. by ``BackboneFinetuning``) appears as ``/pg2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.suggest import did_you_mean

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


class NoLoggerError(RuntimeError):
    """LearningRateMonitor was used on a trainer without loggers."""


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

    # ------------------------------------------------------------------ set-up
    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        if not trainer.loggers:
            raise NoLoggerError(
                "LearningRateMonitor has nowhere to write: the Trainer has no logger. "
                "Pass one (e.g. Trainer(logger=CSVLogger(...))) or remove the LearningRateMonitor."
            )
        self.lrs = {name: [] for _, names, _ in self._tracked(trainer) for name in names}

    def _tracked(self, trainer: Trainer) -> list[tuple[Any, list[str], str | None]]:
        """``(optimizer, one name per parameter group, interval)``: optimizers with a
        scheduler first (interval = the scheduler's), then those without (``None``:
        logged at every opportunity). Names are recomputed on each call, so a
        parameter group added during training (fine-tuning) gets its own name."""
        tracked: list[tuple[Any, list[str], str | None]] = []
        per_class: dict[type, int] = {}
        seen: list[Any] = []

        def names_for(opt: Any, base: str, counted: bool) -> list[str]:
            seen.append(opt)
            if counted:
                per_class[type(opt)] = per_class.get(type(opt), 0) + 1
            count = per_class.get(type(opt), 0)
            if count > 1:
                base = f"{base}-{count - 1}"
            groups = opt.param_groups
            if len(groups) == 1:
                return [f"{base}/{groups[0]['name']}" if groups[0].get("name") else base]
            return [f"{base}/{g.get('name', f'pg{i + 1}')}" for i, g in enumerate(groups)]

        for cfg in trainer.lr_scheduler_configs:
            opt = cfg.scheduler.optimizer
            base = cfg.name if cfg.name is not None else f"lr-{type(opt).__name__}"
            tracked.append((opt, names_for(opt, base, cfg.name is None), cfg.interval or "epoch"))
        for opt in trainer.optimizers:
            opt = getattr(opt, "optimizer", opt)
            if not any(opt is s for s in seen):
                tracked.append((opt, names_for(opt, f"lr-{type(opt).__name__}", True), None))
        return tracked

    # ------------------------------------------------------------------ logging
    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
        # As Lightning: before the step that will make global_step a multiple of
        # log_every_n_steps, at the step count of that moment.
        every = trainer.log_every_n_steps
        if self.logging_interval != "epoch" and (trainer.global_step + 1) % every == 0:
            self._log(trainer, "step")

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if self.logging_interval != "step":
            self._log(trainer, "epoch")

    def _log(self, trainer: Trainer, interval: str) -> None:
        stats: dict[str, float] = {}
        for optimizer, names, own_interval in self._tracked(trainer):
            if own_interval is not None and self.logging_interval is None and own_interval != interval:
                continue
            if len(names) > 1 and names[0].endswith("/pg1") and names[0][: -len("/pg1")] in self.lrs:
                self.lrs[names[0]] = self.lrs.pop(names[0][: -len("/pg1")])  # the optimizer gained groups
            uses_betas = "betas" in getattr(optimizer, "defaults", {})
            for name, group in zip(names, optimizer.param_groups, strict=False):
                lr = float(group["lr"])
                stats[name] = lr
                self.lrs.setdefault(name, []).append(lr)
                if self.log_momentum:
                    stats[f"{name}-momentum"] = float(group["betas"][0]) if uses_betas else float(group.get("momentum", 0.0) or 0.0)
                if self.log_weight_decay:
                    stats[f"{name}-weight_decay"] = float(group.get("weight_decay", 0.0) or 0.0)
        if stats:
            trainer.log_metrics(stats, step=trainer.global_step)


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "lr_monitor", LearningRateMonitor)
