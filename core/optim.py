"""The forms ``configure_optimizers`` may return, normalised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import optimizer as _optimizer_module  # where the global step hooks live

_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "name", "strict", "reduce_on_plateau", "opt_idx"}


@dataclass
class LRSchedulerConfig:
    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    name: str | None = None
    strict: bool = True
    reduce_on_plateau: bool = False
    opt_idx: int | None = None


class OptimizerConfigError(ValueError):
    """``configure_optimizers`` returned something ember does not understand."""


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, torch.optim.Optimizer) or (hasattr(obj, "step") and hasattr(obj, "param_groups"))


def _scheduler_config(obj: Any, opt_idx: int | None = None) -> LRSchedulerConfig:
    if isinstance(obj, dict):
        unknown = set(obj) - _SCHEDULER_KEYS
        if unknown:
            raise OptimizerConfigError(f"Unknown lr_scheduler keys {sorted(unknown)}; allowed: {sorted(_SCHEDULER_KEYS)}.")
        if "scheduler" not in obj:
            raise OptimizerConfigError('An lr_scheduler dict needs a "scheduler" key.')
        config = LRSchedulerConfig(**{"opt_idx": opt_idx, **obj})
    else:
        config = LRSchedulerConfig(obj, opt_idx=opt_idx)
    if config.interval not in ("step", "epoch"):
        raise OptimizerConfigError(f'lr_scheduler "interval" must be "step" or "epoch", not {config.interval!r}.')
    if not isinstance(config.frequency, int) or config.frequency < 1:
        raise OptimizerConfigError(f'lr_scheduler "frequency" must be a positive int, not {config.frequency!r}.')
    config.reduce_on_plateau = config.reduce_on_plateau or isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if config.reduce_on_plateau and config.monitor is None:
        raise OptimizerConfigError(
            'ReduceLROnPlateau needs a metric: return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}.'
        )
    return config


def parse_optimizers(result: Any) -> tuple[list[Any], list[LRSchedulerConfig]]:
    """Turn every form Lightning accepts into ``(optimizers, scheduler_configs)``."""
    if result is None:
        return [], []
    if _is_optimizer(result):
        return [result], []
    if isinstance(result, dict):
        return _from_dict(result, 0)
    if isinstance(result, (list, tuple)):
        if len(result) == 2 and isinstance(result[0], (list, tuple)):
            optimizers = list(result[0])
            schedulers = result[1] if isinstance(result[1], (list, tuple)) else [result[1]]
            return _checked(optimizers), [_scheduler_config(s) for s in schedulers]
        if all(isinstance(r, dict) for r in result):
            optimizers, configs = [], []
            for i, item in enumerate(result):
                opts, scheds = _from_dict(item, i)
                optimizers += opts
                configs += scheds
            return optimizers, configs
        return _checked(list(result)), []
    raise OptimizerConfigError(
        f"configure_optimizers returned a {type(result).__name__}. Return an optimizer, a list of optimizers, "
        "(optimizers, schedulers), or {'optimizer': ..., 'lr_scheduler': ...}."
    )


def _from_dict(result: dict[str, Any], opt_idx: int) -> tuple[list[Any], list[LRSchedulerConfig]]:
    unknown = set(result) - {"optimizer", "lr_scheduler", "monitor"}
    if unknown:
        raise OptimizerConfigError(
            f"Unknown keys {sorted(unknown)} in configure_optimizers' dict; allowed: optimizer, lr_scheduler, monitor."
        )
    if "optimizer" not in result:
        raise OptimizerConfigError('configure_optimizers returned a dict without an "optimizer" key.')
    configs = []
    if result.get("lr_scheduler") is not None:
        scheduler = result["lr_scheduler"]
        if not isinstance(scheduler, dict):
            scheduler = {"scheduler": scheduler}
        if "monitor" in result and "monitor" not in scheduler:
            scheduler = {**scheduler, "monitor": result["monitor"]}
        configs.append(_scheduler_config(scheduler, opt_idx))
    return _checked([result["optimizer"]]), configs


def _checked(optimizers: list[Any]) -> list[Any]:
    for opt in optimizers:
        if not _is_optimizer(opt):
            raise OptimizerConfigError(f"configure_optimizers returned {type(opt).__name__} where an optimizer was expected.")
    return optimizers


# --------------------------------------------------------------------------- stepping with a closure

#: ``torch.optim`` classes whose ``step`` re-evaluates the closure (so it must be handed over).
_REEVALUATES_CLOSURE = ("torch.optim.lbfgs",)
_closure_once: dict[type, bool] = {}


def _calls_closure_once(optimizer: Any) -> bool:
    """Whether ``optimizer.step(closure)`` is ``closure()`` then ``step()``:
    the ``step`` of a ``torch.optim`` optimizer (subclasses that keep it
    included), except those that re-evaluate the closure (LBFGS). Decided once
    per class; an optimizer from elsewhere gets its closure."""
    cls = type(optimizer)
    known = _closure_once.get(cls)
    if known is None:
        module = cls.step.__module__ or ""
        known = _closure_once[cls] = module.startswith("torch.optim.") and module not in _REEVALUATES_CLOSURE
    return known


def step_with_closure(optimizer: Any, closure: Any) -> Any:
    """``optimizer.step(closure)``, returning the closure's result, for
    precision plugins and strategies.

    For the ``torch.optim`` optimizers that call the closure once, before
    updating (all but LBFGS), it runs the closure first and then ``step()``:
    the same computation and the same weights, without ``step`` wrapping the
    forward and backward in its grad-mode switch and profiler range, which
    measured about 5 us per step on the benchmark MLP (docs/benchmarks.md).
    The closure is handed to ``step`` as before for any other optimizer, when
    the optimizer has step pre-hooks (they run before the closure there), and
    when gradients are disabled (``step`` enables them for the closure)."""
    if closure is not None and closure_may_run_first(optimizer):
        result = closure()
        optimizer.step()
        return result
    return optimizer.step(closure) if closure is not None else optimizer.step()


def closure_may_run_first(optimizer: Any) -> bool:
    """Whether ``optimizer.step(closure)`` may be replaced by ``closure()``
    then ``optimizer.step()`` (see :func:`step_with_closure`): a ``torch.optim``
    optimizer that calls its closure once, no step pre-hooks, gradients enabled."""
    return (
        _calls_closure_once(optimizer)
        and torch.is_grad_enabled()
        and not optimizer._optimizer_step_pre_hooks
        and not _optimizer_module._global_optimizer_pre_hooks
    )


class OptimizerWrapper:
    """Base of the objects that stand in for a user's optimizer
    (``self.optimizers()``'s handle, DeepSpeed's): ``optimizer`` is the
    wrapped one, and ``param_groups``, ``state`` and every attribute the
    subclass does not define are the wrapped optimizer's."""

    optimizer: Any

    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    @property
    def param_groups(self) -> Any:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state
