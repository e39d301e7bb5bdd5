"""Roles with a single provider, and the registry through which plugins offer them.

Accelerator, strategy, precision, checkpoint IO and cluster environment each
have exactly one provider per run. The trainer picks each one by name once, at
set-up, and then calls it directly: these are not broadcast hooks. Callbacks
and loggers are registered here too, so a stack file can name them.

A plugin offers providers from its ``register_roles`` hook::

    @ember.hookimpl
    def register_roles(registry):
        registry.add("strategy", "my_strategy", MyStrategy)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ember.suggest import closest as closest  # re-exported: older imports of ember.roles.closest
from ember.suggest import did_you_mean

if TYPE_CHECKING:
    import torch

    from ember.module import Module

KINDS: tuple[str, ...] = ("accelerator", "strategy", "precision", "checkpoint_io", "environment", "callback", "logger", "profiler")


class UnknownNameError(LookupError):
    """A name was asked for that no plugin registered."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str  # name of the plugin that registered it


class RoleRegistry:
    """Name to provider, per kind. Later registrations of a name win, so an
    external plugin can replace a built-in one deliberately."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._current_plugin = "<unknown>"

    def add(self, kind: str, name: str, factory: Callable[..., Any], /) -> None:
        """Offer ``factory`` under ``name`` for role ``kind``."""
        if kind not in self._entries:
            raise ValueError(f"Unknown role kind {kind!r}; expected one of {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
        self._entries[kind][name] = Entry(kind, name, factory, self._current_plugin)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self) -> list[Entry]:
        return [e for kind in KINDS for e in self._entries[kind].values()]

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[kind][name]
        except KeyError:
            known = self.names(kind)
            raise UnknownNameError(
                f"No {kind} named {name!r} is registered. Registered: {', '.join(known) or 'none'}."
                f"{did_you_mean(name, known)} A plugin that provides it may be missing or disabled; "
                "run `ember plugins` to see what is installed."
            ) from None

    def create(self, kind: str, name: str, /, *args: Any, **kwargs: Any) -> Any:
        return self.entry(kind, name).factory(*args, **kwargs)

    @contextlib.contextmanager
    def registering_for(self, plugin_name: str):  # type: ignore[no-untyped-def]
        previous, self._current_plugin = self._current_plugin, plugin_name
        try:
            yield self
        finally:
            self._current_plugin = previous


# --------------------------------------------------------------------------- role protocols


@runtime_checkable
class Accelerator(Protocol):
    """Knows one kind of hardware."""

    name: str

    @staticmethod
    def is_available() -> bool:
        """Whether this hardware is present."""

    # Optional: ``unavailable_reason() -> str`` explains a false ``is_available()``;
    # ``default_strategy(num_devices, num_nodes) -> str`` names the strategy that
    # ``strategy="auto"`` means on this hardware (otherwise single_device or ddp).

    def parse_devices(self, devices: int | str | list[int]) -> list[torch.device]:
        """Turn the user's ``devices`` value into concrete devices, or raise a
        clear error saying what was asked for and what was found."""

    def setup_device(self, device: torch.device) -> None:
        """Prepare ``device`` for use by this process."""

    def teardown(self) -> None:
        """Release what ``setup_device`` took."""


@runtime_checkable
class Precision(Protocol):
    """Numerics of the forward and backward pass."""

    name: str

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Cast parameters where the precision needs it (e.g. ``64-true``)."""

    def convert_input(self, batch: Any) -> Any:
        """Cast floating-point inputs where the precision needs it."""

    def forward_context(self) -> ContextManager[Any]:
        """Context wrapping every ``*_step`` call (autocast, for instance)."""

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        """Back-propagate ``loss`` (scaling it first where needed)."""

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Undo loss scaling on ``optimizer``'s gradients before clipping. A
        precision that never scales says so with :class:`DeclaresScaling`, so
        the loop skips the call."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        """Step ``optimizer``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class CheckpointIO(Protocol):
    """Reads and writes checkpoint files."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None: ...

    def load_checkpoint(self, path: str) -> dict[str, Any]: ...

    def remove_checkpoint(self, path: str) -> None: ...


@runtime_checkable
class ClusterEnvironment(Protocol):
    """Where this process sits in a (possibly multi-node) job."""

    name: str

    @staticmethod
    def detect() -> bool:
        """Whether the current process runs inside this kind of environment."""

    def world_size(self) -> int: ...

    def global_rank(self) -> int: ...

    def local_rank(self) -> int: ...

    def node_rank(self) -> int: ...

    @property
    def main_address(self) -> str: ...

    @property
    def main_port(self) -> int: ...


class Profiler(Protocol):
    """Optional observer chosen with ``Trainer(profiler=name | object)``. The
    trainer hands ``wrap`` to the hook dispatch, once per run, for every hook
    implementation (``owner`` names the plugin, callback or module that
    implements it), so the profiler can time each one. If the profiler is
    also a :class:`~ember.Callback` it receives hooks like any callback (for
    example ``on_fit_end`` to print its report). With no profiler nothing is
    wrapped and a step costs nothing extra."""

    def wrap(self, hook_name: str, owner: str, fn: Callable[..., Any]) -> Callable[..., Any]: ...


class Launcher(Protocol):
    """Optional ``strategy.launcher``: starts the processes of a run (for
    example ``ddp_spawn``). ``Trainer.fit/validate/test/predict`` call
    ``launch(function, *args)`` when ``should_launch()`` is true; each worker
    then calls ``function(*args)`` on its own copy of the trainer, and
    ``launch`` returns what rank zero's call returned. Strategies whose
    processes are started from outside (``torchrun``, ``srun``) have none."""

    def should_launch(self) -> bool: ...

    def launch(self, function: Callable[..., Any], *args: Any) -> Any: ...


@runtime_checkable
class Strategy(Protocol):
    """How the module is placed on devices and how processes cooperate."""

    name: str
    accelerator: Accelerator
    precision: Precision
    checkpoint_io: CheckpointIO
    environment: ClusterEnvironment

    @property
    def root_device(self) -> torch.device: ...

    @property
    def world_size(self) -> int: ...

    @property
    def global_rank(self) -> int: ...

    @property
    def local_rank(self) -> int: ...

    @property
    def is_global_zero(self) -> bool: ...

    def setup_environment(self) -> None:
        """Start process groups and the like; called once before ``setup``."""

    def setup_module(self, module: Module) -> torch.nn.Module:
        """Move ``module`` to its device and wrap it; returns what the training
        step is called on (the user's module for single-device)."""

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]: ...

    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        """Adapt a dataloader (for example insert a distributed sampler)."""

    def batch_to_device(self, batch: Any) -> Any: ...

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None: ...

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any: ...

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor: ...

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def broadcast(self, obj: Any, src: int = 0) -> Any: ...

    def barrier(self, name: str | None = None) -> None: ...

    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]: ...

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None: ...

    def load_checkpoint(self, path: str) -> dict[str, Any]: ...

    def remove_checkpoint(self, path: str) -> None: ...

    def teardown(self) -> None: ...


# --------------------------------------------------------------------------- optional capabilities
# Named protocols the kernel checks with ``isinstance`` (once per run, never per
# step), so a third-party strategy or callback gets the same treatment as a
# built-in by providing the same members; nothing is found by class name.


@runtime_checkable
class SetsUpModuleAndOptimizers(Protocol):
    """Strategy capability (every :class:`~ember.strategies.StrategyBase` has
    it): once ``configure_optimizers`` returned, the trainer calls
    ``setup_module_and_optimizers(module, optimizers)`` with what
    ``setup_module`` returned and those optimizers, and trains with the
    ``(module, optimizers)`` it returns: the loop calls that module
    (``placed(batch, batch_idx)`` and the backward pass), and
    ``trainer.model`` shows it. DeepSpeed returns its engine, which wraps
    module and optimizer together (Lightning Fabric's seam of the same name).
    A strategy without it gets ``setup_optimizers(optimizers)`` and keeps its module."""

    def setup_module_and_optimizers(
        self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]
    ) -> tuple[torch.nn.Module, list[Any]]: ...


@runtime_checkable
class ReplacesTrainingModule(Protocol):
    """Optional strategy capability, the older form of
    :class:`SetsUpModuleAndOptimizers` (kept for strategies written against
    it): right after ``setup_optimizers`` the trainer calls
    ``training_module()`` and, when it returns a module, the loop calls that
    one instead of what ``setup_module`` returned."""

    def training_module(self) -> torch.nn.Module | None: ...


@runtime_checkable
class StopsTraining(Protocol):
    """Optional callback capability: ends ``fit`` early when a monitored value
    stops improving (``EarlyStopping``). ``trainer.early_stopping_callback(s)``
    are the callbacks with these members, built-in or not."""

    monitor: str | None
    patience: int
    wait_count: int
    stopped_epoch: int


@runtime_checkable
class LaunchesProcesses(Protocol):
    """Optional strategy capability: a :class:`Launcher` that starts the
    run's processes (``ddp_spawn``, fsdp, deepspeed, ember-xla). With
    ``launcher`` ``None`` (or without the member) the run stays in this process."""

    launcher: Launcher | None


@runtime_checkable
class DeclaresScaling(Protocol):
    """Optional precision capability: ``scales_gradients`` says whether the
    precision scales the loss (``16-mixed``). When it is false the loop skips
    ``unscale_gradients``; a precision without the member is assumed to scale."""

    scales_gradients: bool


def scales_gradients(precision: Any) -> bool:
    """Whether ``precision`` may scale gradients (:class:`DeclaresScaling`)."""
    return precision.scales_gradients if isinstance(precision, DeclaresScaling) else True


@runtime_checkable
class StepsDirectly(Protocol):
    """Optional precision capability: ``steps_directly`` is true when its
    ``backward`` is just ``loss.backward()`` and its ``optimizer_step`` is
    :func:`ember.optim.step_with_closure` (``32-true``, ``64-true``). With a
    strategy that keeps :class:`~ember.strategies.StrategyBase`'s delegating
    ``backward``/``optimizer_step``, the automatic step then makes those calls
    itself, without the strategy and precision frames in between."""

    steps_directly: bool


@runtime_checkable
class SkipsGradientSync(Protocol):
    """Optional strategy capability: ``no_backward_sync(module)`` is a context
    in which backward passes do not synchronise gradients across processes;
    the loop enters it for the batches of an accumulation window before the
    last (DDP, FSDP)."""

    def no_backward_sync(self, module: torch.nn.Module) -> ContextManager[Any]: ...


@runtime_checkable
class GathersObjects(Protocol):
    """Optional strategy capability: ``all_gather_object(obj)`` returns every
    rank's ``obj`` (rank order). Checkpoints then keep every rank's random
    state, so each rank resumes exactly."""

    def all_gather_object(self, obj: Any) -> list[Any]: ...


@runtime_checkable
class MovesBatches(Protocol):
    """Optional strategy capability: ``moves_batches`` is ``False`` when
    ``batch_to_device`` has nothing to do (the batch already sits where the
    step needs it), so the loop skips the call. Without the member the loop
    calls ``batch_to_device`` for every batch."""

    moves_batches: bool


@runtime_checkable
class DistributesSamplers(Protocol):
    """Optional strategy capability: ``use_distributed_sampler`` says whether
    ``process_dataloader`` puts a distributed sampler in the training and
    evaluation loaders; ``Trainer(use_distributed_sampler=False)`` turns it off."""

    use_distributed_sampler: bool
