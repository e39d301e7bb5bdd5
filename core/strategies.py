"""Strategies under Lightning's names: ``from lightning.pytorch.strategies import X``
ports to ``from ember.strategies import X``. Imported lazily.

``Strategy`` is the protocol every strategy meets, ``StrategyBase`` the base
that holds a strategy's roles (built-in or third-party), and ``ParallelStrategy`` the
base of the multi-process ones (``ddp``, ``ddp_spawn``, ``deepspeed``,
``fsdp``): ``isinstance(trainer.strategy, ParallelStrategy)`` tells them apart
from ``SingleDeviceStrategy``.
"""

from __future__ import annotations

from typing import Any

from ember._lazy import lazy_exports

_EXPORTS = {
    "Strategy": "ember.roles",
    "SingleDeviceStrategy": "ember.plugins.strategies.single_device",
    "DDPStrategy": "ember.plugins.strategies.ddp",
    "DDPSpawnStrategy": "ember.plugins.strategies.ddp",
    "DeepSpeedStrategy": "ember.plugins.strategies.deepspeed",
    "FSDPStrategy": "ember.plugins.strategies.fsdp",
}
__all__ = sorted([*_EXPORTS, "ParallelStrategy", "StrategyBase"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class StrategyBase:
    """The roles every strategy holds: ``accelerator``, ``precision``,
    ``checkpoint_io`` and ``environment``, under those names. ``None`` is
    filled in by the Trainer from its own arguments (the resolved providers).
    A strategy, built-in or third-party, calls ``StrategyBase.__init__`` (or
    ``super().__init__``) with its role arguments instead of storing them itself."""

    def __init__(self, accelerator: Any = None, precision: Any = None, checkpoint_io: Any = None, environment: Any = None) -> None:
        self.accelerator = accelerator
        self.precision = precision
        self.checkpoint_io = checkpoint_io
        self.environment = environment


class ParallelStrategy(StrategyBase):
    """Base of the strategies that run several processes. Subclasses set
    ``parallel_devices`` and implement :class:`~ember.roles.Strategy`.
    Its constructor takes Lightning's argument names and stores them under
    ember's (``environment``, ``precision``); ``None`` is filled in by the
    Trainer from its own arguments."""

    parallel_devices: list | None = None

    def __init__(
        self,
        accelerator: Any = None,
        parallel_devices: list | None = None,
        cluster_environment: Any = None,
        checkpoint_io: Any = None,
        precision_plugin: Any = None,
    ) -> None:
        StrategyBase.__init__(self, accelerator, precision_plugin, checkpoint_io, cluster_environment)
        self.parallel_devices = parallel_devices


def lightning_aliases(devices: Any, environment: Any, precision: Any, parallel_devices: Any, cluster_environment: Any, precision_plugin: Any, owner: str) -> tuple[Any, Any, Any]:
    """A strategy's ``(devices, environment, precision)`` given either ember's
    argument names or Lightning's (``parallel_devices``, ``cluster_environment``,
    ``precision_plugin``); both for one thing is an error."""
    pairs = (("devices", devices, "parallel_devices", parallel_devices), ("environment", environment, "cluster_environment", cluster_environment),
             ("precision", precision, "precision_plugin", precision_plugin))  # fmt: skip
    for ours, a, theirs, b in pairs:
        if a is not None and b is not None:
            raise TypeError(f"{owner}: pass {ours}= or Lightning's {theirs}=, not both.")
    return (devices if devices is not None else parallel_devices, environment if environment is not None else cluster_environment,
            precision if precision is not None else precision_plugin)  # fmt: skip
