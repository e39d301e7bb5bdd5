"""Strategies under Lightning's names: ``from lightning.pytorch.strategies import X``
ports to ``from ember.strategies import X``. Imported lazily.

``Strategy`` is the protocol every strategy meets and ``ParallelStrategy`` the
base of the multi-process ones (``ddp``, ``ddp_spawn``, ``deepspeed``,
``fsdp``): ``isinstance(trainer.strategy, ParallelStrategy)`` tells them apart
from ``SingleDeviceStrategy``.
"""

from __future__ import annotations

from ember._lazy import lazy_exports

_EXPORTS = {
    "Strategy": "ember.roles",
    "SingleDeviceStrategy": "ember.plugins.strategies.single_device",
    "DDPStrategy": "ember.plugins.strategies.ddp",
    "DDPSpawnStrategy": "ember.plugins.strategies.ddp",
    "DeepSpeedStrategy": "ember.plugins.strategies.deepspeed",
    "FSDPStrategy": "ember.plugins.strategies.fsdp",
}
__all__ = sorted([*_EXPORTS, "ParallelStrategy"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class ParallelStrategy:
    """Base of the strategies that run several processes. Subclasses set
    ``parallel_devices`` and implement :class:`~ember.roles.Strategy`."""

    parallel_devices: list | None = None
