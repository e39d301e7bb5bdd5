"""``fsdp``: fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``).

Each process keeps only its shard of every parameter, gradient and optimizer
state; a layer's full parameters are gathered just before it runs and freed
after. Processes are started like ``ddp``: by ``torchrun``/``srun`` (ember joins
the group), or by ember's spawn launcher when no launcher started the script.

What gets sharded (``auto_wrap``):

- a set (or list) of module classes: every submodule of one of these classes is
  sharded as a unit, then the root;
- ``None`` (default): each direct child of the module that holds parameters is
  a unit, then the root.

Checkpoints (``state_dict_type``):

- ``"sharded"`` (default): the checkpoint path is a **directory** (whatever its
  name; ``epoch=3.ckpt`` becomes a directory) holding the model and optimizer
  shards written by ``torch.distributed.checkpoint`` (``*.distcp`` and
  ``.metadata``) and ``meta.pt``, the rest of ember's checkpoint (loop
  position, callbacks, schedulers, hyperparameters, ...), written by rank zero
  and readable with ``torch.load(weights_only=True)``. With ``async_save=True``
  the shards are written in a background thread; the write is awaited before
  the next save, before any load or removal, and at teardown. Every save is
  written to a hidden sibling directory first and renamed into place when
  complete, so an interrupted save never leaves a half-written checkpoint under
  the final name.
- ``"full"``: rank zero gathers the full (unsharded) state on the CPU and
  writes one ordinary ember checkpoint file, which a single-device run can
  resume.

Loading follows what is on disk, not ``state_dict_type``: a directory is read
as a sharded checkpoint, a file as a full one. Use
:func:`ember.plugins.strategies.fsdp_consolidate.consolidate` (``ember checkpoint
consolidate DIR OUT``) to turn a sharded directory into one file.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from ember.plugin_manager import hookimpl
from ember.plugins.strategies.ddp import DDPStrategy
from ember.plugins.strategies.fsdp_checkpoint import (  # noqa: F401  (re-exported)
    META_FILE,
    SHARDED_KEY,
    FSDPCheckpoints,
    is_sharded_checkpoint,
    optimizer_state_to_ids,
    optimizer_state_to_names,
)
from ember.plugins.strategies.fsdp_options import (
    apply_activation_checkpointing,
    cast_buffers,
    fully_shard_kwargs,
    make_mesh,
    select,
    sharding,
)

_STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")


# --------------------------------------------------------------------------- the strategy


class FSDPStrategy(FSDPCheckpoints, DDPStrategy):
    """Fully sharded data parallel with FSDP2.

    ``auto_wrap``: module classes to shard as units (default: each direct child
    with parameters). ``state_dict_type``: ``"sharded"`` (a directory per
    checkpoint, written with ``torch.distributed.checkpoint``) or ``"full"``
    (one file, gathered on rank zero). ``async_save``: write sharded
    checkpoints in a background thread. ``reshard_after_forward``,
    ``mp_policy``, ``offload_policy`` and other keywords go to ``fully_shard``.
    ``use_distributed_sampler``, ``process_group_backend`` and ``timeout`` are
    as for ``ddp``.
    """

    name = "fsdp"

    def __init__(
        self,
        accelerator: Any = None,
        precision: Any = None,
        checkpoint_io: Any = None,
        environment: Any = None,
        devices: list[torch.device] | int | None = None,
        num_nodes: int = 1,
        *,
        auto_wrap: Iterable[type[torch.nn.Module]] | None = None,
        state_dict_type: str = "sharded",
        async_save: bool = False,
        use_distributed_sampler: bool = True,
        process_group_backend: str | None = None,
        timeout: Any = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: Any = None,
        precision_plugin: Any = None,
        cpu_offload: Any = None,
        mixed_precision: Any = None,
        auto_wrap_policy: Any = None,
        activation_checkpointing: Any = None,
        activation_checkpointing_policy: Any = None,
        sharding_strategy: Any = "FULL_SHARD",
        device_mesh: Any = None,
        **fsdp_kwargs: Any,
    ) -> None:
        super().__init__(
            accelerator,
            precision,
            checkpoint_io,
            environment,
            devices,
            num_nodes,
            use_distributed_sampler=use_distributed_sampler,
            process_group_backend=process_group_backend,
            timeout=timeout,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            precision_plugin=precision_plugin,
        )
        if state_dict_type not in ("sharded", "full"):
            raise ValueError(f"fsdp: state_dict_type must be 'sharded' or 'full', not {state_dict_type!r}.")
        if async_save and state_dict_type != "sharded":
            raise ValueError("fsdp: async_save=True writes sharded checkpoints; it needs state_dict_type='sharded'.")
        self.auto_wrap = tuple(auto_wrap) if auto_wrap is not None else None
        self.state_dict_type = state_dict_type
        self.async_save = bool(async_save)
        self.fsdp_kwargs = fsdp_kwargs
        # Lightning's FSDP1-style keywords: see ember.plugins.strategies.fsdp_options
        reshard, self.hybrid = sharding(sharding_strategy)
        self.cpu_offload, self.mixed_precision, self.device_mesh = cpu_offload, mixed_precision, device_mesh
        self.shard_kwargs = fully_shard_kwargs(cpu_offload, mixed_precision, reshard)
        self.auto_wrap_policy = auto_wrap_policy
        self.activation_checkpointing = (activation_checkpointing, activation_checkpointing_policy)
        self.mesh: Any = None
        self._module: torch.nn.Module | None = None
        self._optimizers: list[torch.optim.Optimizer] = []
        self._pending_load: dict[str, Any] | None = None
        self._save_future: Any = None
        self._finish_save: Callable[[], None] | None = None
        self._ckpt_group: Any = None
        self._final_state: dict[str, Any] | None = None

    # ----------------------------------------------------------------- set-up
    def setup_environment(self) -> None:
        super().setup_environment()
        self.mesh = make_mesh(self._device.type, self.device_mesh, self.hybrid, dist.get_world_size(), self.num_processes)
        if self.async_save:
            # The background writer runs collectives; on its own group they cannot
            # interleave with the training's collectives on the default group.
            self._ckpt_group = dist.new_group(backend="gloo")
        if not self.spawned_worker:
            atexit.register(self.wait_for_checkpoint)

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        module = self.precision.convert_module(module)
        module = module.to(self._device)
        self._manual_sync = False
        kwargs = {"mesh": self.mesh, **self.shard_kwargs, **self.fsdp_kwargs}
        cast_buffers(module, self.mixed_precision)
        apply_activation_checkpointing(module, *self.activation_checkpointing)
        units = select(module, self.auto_wrap if self.auto_wrap is not None else self.auto_wrap_policy)
        if units is not None:
            for unit in reversed(units):  # innermost first
                fully_shard(unit, **kwargs)
        else:
            for child in module.children():
                if any(True for _ in child.parameters()):
                    fully_shard(child, **kwargs)
        fully_shard(module, **kwargs)
        # The loops call the step methods directly, not the module: make them
        # gather the root's parameters the way forward() does.
        for name in _STEP_METHODS:
            if callable(getattr(type(module), name, None)):
                register_fsdp_forward_method(module, name)
        self._module = module
        if self._pending_load is not None:
            self._load_model_state(module)
        return module

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        self._optimizers = list(optimizers)
        if self._pending_load is not None and self._pending_load.get("with_optimizers"):
            self._load_optimizer_states()
        return optimizers

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.precision.backward(loss, module)  # FSDP reduce-scatters the gradients during backward

    def no_backward_sync(self, module: torch.nn.Module) -> Any:
        """Accumulate gradients locally (no reduce-scatter) inside the context."""
        return _gradient_sync_off(module)

    # ----------------------------------------------------------------- state dicts
    def full_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        """The unsharded weights, on rank zero (other ranks get ``{}``). Collective."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(module, options=self._options(full=True))

    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        """``"full"``: the gathered weights on rank zero (collective: every rank
        calls it when a checkpoint is assembled). ``"sharded"``: this rank's
        ``DTensor`` shards (no communication); ``save_checkpoint`` writes them."""
        if self._final_state is not None:  # gathered by every rank at the end of a spawned stage
            state, self._final_state = self._final_state, None
            return state
        if not _is_sharded(module):
            return module.state_dict()
        if self.state_dict_type == "full":
            self._group_ready("gathering the full weights")  # raises once this rank failed
            return self.full_state_dict(module)
        return module.state_dict()

    def gather_final_state(self, module: torch.nn.Module | None) -> None:
        """At the end of a spawned stage, on every rank (a collective): finish a
        background save, then gather the full weights that rank zero ships back."""
        self.wait_for_checkpoint()
        if module is not None and _is_sharded(module):
            state = self.full_state_dict(module)
            self._final_state = state if self.is_global_zero else None

    # ----------------------------------------------------------------- teardown
    def teardown(self) -> None:
        try:
            self.wait_for_checkpoint()
        finally:
            self._pending_load = None
            self._module = None
            self._optimizers = []
            self.mesh = None
            self._ckpt_group = None
            super().teardown()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("mesh", "_module", "_save_future", "_finish_save", "_ckpt_group"):
            state[key] = None
        state["_optimizers"] = []
        return state


@contextlib.contextmanager
def _gradient_sync_off(module: torch.nn.Module) -> Iterator[None]:
    setter = getattr(module, "set_requires_gradient_sync", None)
    if setter is None:
        yield
        return
    setter(False)
    try:
        yield
    finally:
        setter(True)


def _is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("strategy", "fsdp", FSDPStrategy)
