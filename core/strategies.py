"""Strategies under Lightning's names: ``from lightning.pytorch.strategies import X``
ports to ``from ember.strategies import X``. Imported lazily.

``Strategy`` is the protocol every strategy meets, ``StrategyBase`` the base
that holds a strategy's roles (built-in or third-party), and ``ParallelStrategy`` the
base of the multi-process ones (``ddp``, ``ddp_spawn``, ``deepspeed``,
``fsdp``): ``isinstance(trainer.strategy, ParallelStrategy)`` tells them apart
from ``SingleDeviceStrategy``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember._lazy import lazy_exports
from ember.roles import ReplacesTrainingModule, SetsUpModuleAndOptimizers

if TYPE_CHECKING:
    import torch

_EXPORTS = {
    "Strategy": "ember.roles",
    "SingleDeviceStrategy": "ember.plugins.strategies.single_device",
    "DDPStrategy": "ember.plugins.strategies.ddp",
    "DDPSpawnStrategy": "ember.plugins.strategies.ddp",
    "DeepSpeedStrategy": "ember.plugins.strategies.deepspeed",
    "FSDPStrategy": "ember.plugins.strategies.fsdp",
}
__all__ = sorted([*_EXPORTS, "ParallelStrategy", "StrategyBase", "setup_module_and_optimizers"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class StrategyBase:
    """The roles every strategy holds: ``accelerator``, ``precision``,
    ``checkpoint_io`` and ``environment``, under those names. ``None`` is
    filled in by the Trainer from its own arguments (the resolved providers).
    A strategy, built-in or third-party, calls ``super().__init__`` with its
    role arguments instead of storing them itself.

    It also holds the members that only hand work to those roles (the
    backward pass and the optimizer step to the precision, checkpoint files
    to the checkpoint IO, written and removed by global rank zero), and
    :meth:`setup_module_and_optimizers`; a strategy overrides what it does
    differently."""

    def __init__(self, accelerator: Any = None, precision: Any = None, checkpoint_io: Any = None, environment: Any = None) -> None:
        self.accelerator = accelerator
        self.precision = precision
        self.checkpoint_io = checkpoint_io
        self.environment = environment

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[Any]:
        """The optimizers the loop steps (default: those given)."""
        return optimizers

    def setup_module_and_optimizers(
        self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]
    ) -> tuple[torch.nn.Module, list[Any]]:
        """Called by the trainer once ``configure_optimizers`` returned, with
        what ``setup_module`` returned and those optimizers; returns the module
        the loop calls (``module(batch, batch_idx)`` goes through it when it is
        not the user's module) and the optimizers it steps. A strategy whose
        engine wraps module and optimizer together (DeepSpeed) returns the
        engine here, as Lightning Fabric's strategies do. The default:
        :meth:`setup_optimizers`, and the module as it is (or, for a strategy
        with the older :class:`~ember.roles.ReplacesTrainingModule` capability,
        its ``training_module()``)."""
        optimizers = self.setup_optimizers(optimizers)
        return replaced_training_module(self, module), optimizers

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.precision.backward(loss, module)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        return module.state_dict()

    def all_gather(self, tensor: Any) -> Any:
        """One process: ``tensor`` with a leading dimension of size one."""
        import torch

        return tensor.unsqueeze(0) if isinstance(tensor, torch.Tensor) else tensor

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        if self.is_global_zero:  # type: ignore[attr-defined]
            self.checkpoint_io.save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        return self.checkpoint_io.load_checkpoint(path)  # type: ignore[no-any-return]

    def remove_checkpoint(self, path: str) -> None:
        if self.is_global_zero:  # type: ignore[attr-defined]
            self.checkpoint_io.remove_checkpoint(path)


def setup_module_and_optimizers(
    strategy: Any, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]
) -> tuple[torch.nn.Module, list[Any]]:
    """What the trainer calls: ``strategy.setup_module_and_optimizers`` for a
    strategy that has it (every :class:`StrategyBase`), else the default
    (``setup_optimizers``), for strategies that only meet the protocol."""
    if isinstance(strategy, SetsUpModuleAndOptimizers):
        return strategy.setup_module_and_optimizers(module, optimizers)
    optimizers = strategy.setup_optimizers(optimizers)
    return replaced_training_module(strategy, module), optimizers


def replaced_training_module(strategy: Any, module: torch.nn.Module) -> torch.nn.Module:
    """``strategy.training_module()`` when the strategy has that older seam
    (:class:`~ember.roles.ReplacesTrainingModule`) and it returns a module, else ``module``."""
    if isinstance(strategy, ReplacesTrainingModule):
        return strategy.training_module() or module
    return module


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
        super().__init__(accelerator, precision_plugin, checkpoint_io, cluster_environment)
        self.parallel_devices = parallel_devices


def lightning_aliases(
    devices: Any, environment: Any, precision: Any, parallel_devices: Any, cluster_environment: Any, precision_plugin: Any, owner: str
) -> tuple[Any, Any, Any]:
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
