"""Lightning's (FSDP1-style) ``FSDPStrategy`` keywords, mapped onto FSDP2
(``fully_shard``) for :class:`~ember.plugins.strategies.fsdp.FSDPStrategy`.

- ``cpu_offload``: ``True``, ``CPUOffload(offload_params=True)`` or a
  ``CPUOffloadPolicy`` → ``fully_shard(offload_policy=CPUOffloadPolicy(...))``
  (parameters, gradients and the optimizer step on the CPU).
- ``mixed_precision``: FSDP1's ``MixedPrecision(param_dtype, reduce_dtype,
  buffer_dtype, cast_forward_inputs)`` or an FSDP2 ``MixedPrecisionPolicy`` →
  ``fully_shard(mp_policy=MixedPrecisionPolicy(...))``; ``buffer_dtype`` casts
  the module's floating-point buffers (FSDP2 leaves buffers alone).
- ``auto_wrap_policy``: which submodules are sharded as units (each gets its
  own ``fully_shard``, innermost first, then the root): a set/list of module
  classes, FSDP1's ``ModuleWrapPolicy``, or a callable ``policy(module,
  recurse, nonwrapped_numel) -> bool`` asked once per submodule
  (``recurse=False``), as FSDP1's ``size_based_auto_wrap_policy`` is.
- ``activation_checkpointing`` (module classes) / ``activation_checkpointing_policy``
  (same forms as ``auto_wrap_policy``): those submodules recompute their
  activations in the backward pass (``torch.distributed._composable.checkpoint``,
  which keeps parameter names, so checkpoints are unchanged).
- ``sharding_strategy``: ``"FULL_SHARD"`` (``reshard_after_forward=True``),
  ``"SHARD_GRAD_OP"`` (``False``: parameters stay gathered between forward and
  backward), ``"HYBRID_SHARD"`` / ``"_HYBRID_SHARD_ZERO2"`` (a 2-D mesh:
  replicated across nodes, sharded within a node). ``"NO_SHARD"`` is
  ``strategy="ddp"``. FSDP1's ``ShardingStrategy`` enum members work too.
- ``device_mesh``: a ``DeviceMesh``, or a ``(replicate, shard)`` shape for
  ``init_device_mesh`` (2-D: hybrid sharding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_SHARDING = {
    "FULL_SHARD": (True, False),
    "SHARD_GRAD_OP": (False, False),
    "HYBRID_SHARD": (True, True),
    "_HYBRID_SHARD_ZERO2": (False, True),
}


def sharding(strategy: Any) -> tuple[bool, bool]:
    """``(reshard_after_forward, hybrid)`` for a ``sharding_strategy``."""
    name = getattr(strategy, "name", strategy)
    if name == "NO_SHARD":
        raise ValueError("FSDPStrategy(sharding_strategy='NO_SHARD') shards nothing: use strategy='ddp' instead.")
    if name not in _SHARDING:
        raise ValueError(f"FSDPStrategy(sharding_strategy={strategy!r}): use one of {sorted(_SHARDING)}.")
    return _SHARDING[name]


def fully_shard_kwargs(cpu_offload: Any, mixed_precision: Any, reshard_after_forward: bool) -> dict[str, Any]:
    """``fully_shard`` keywords for ``cpu_offload``, ``mixed_precision`` and the sharding strategy."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy

    kwargs: dict[str, Any] = {"reshard_after_forward": reshard_after_forward}
    if isinstance(cpu_offload, OffloadPolicy):
        kwargs["offload_policy"] = cpu_offload
    elif cpu_offload is True or getattr(cpu_offload, "offload_params", False):
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    if isinstance(mixed_precision, MixedPrecisionPolicy):
        kwargs["mp_policy"] = mixed_precision
    elif mixed_precision is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=mixed_precision.param_dtype,
            reduce_dtype=mixed_precision.reduce_dtype,
            cast_forward_inputs=bool(getattr(mixed_precision, "cast_forward_inputs", True)),
        )
    return kwargs


def cast_buffers(module: torch.nn.Module, mixed_precision: Any) -> None:
    """FSDP1's ``MixedPrecision.buffer_dtype``: floating-point buffers in that dtype."""
    dtype = getattr(mixed_precision, "buffer_dtype", None)
    if dtype is None:
        return
    for sub in module.modules():
        for name, buffer in list(sub.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_floating_point():
                setattr(sub, name, buffer.to(dtype))


def _selector(policy: Any) -> Callable[[torch.nn.Module], bool] | None:
    if policy is None:
        return None
    if isinstance(policy, type):
        policy = {policy}
    if isinstance(policy, (set, frozenset, list, tuple)):
        classes = tuple(policy)
        return lambda m: isinstance(m, classes)
    classes = getattr(policy, "_module_classes", None)  # FSDP1's ModuleWrapPolicy
    if classes is not None:
        classes = tuple(classes)
        return lambda m: isinstance(m, classes)
    if callable(policy):
        return lambda m: bool(policy(module=m, recurse=False, nonwrapped_numel=sum(p.numel() for p in m.parameters())))
    raise TypeError(f"FSDPStrategy: a wrap policy must be module classes, a ModuleWrapPolicy or a callable, not {policy!r}.")


def select(module: torch.nn.Module, policy: Any) -> list[torch.nn.Module] | None:
    """The submodules (not the root) that ``policy`` picks, outermost first; ``None`` without a policy."""
    chosen = _selector(policy)
    if chosen is None:
        return None
    return [m for m in module.modules() if m is not module and chosen(m)]


def apply_activation_checkpointing(module: torch.nn.Module, classes: Any, policy: Any) -> list[torch.nn.Module]:
    """Recompute the activations of the submodules picked by ``classes`` / ``policy``; returns them."""
    picked = select(module, classes) or []
    picked += [m for m in select(module, policy) or [] if m not in picked]
    if picked:
        from torch.distributed._composable import checkpoint

        for sub in picked:
            checkpoint(sub)
    return picked


def make_mesh(device_type: str, device_mesh: Any, hybrid: bool, world_size: int, per_node: int) -> Any:
    """The device mesh: the user's, a shape, 2-D for hybrid sharding, else 1-D."""
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    if isinstance(device_mesh, DeviceMesh):
        return device_mesh
    if device_mesh is not None:
        shape = tuple(int(n) for n in device_mesh)
    elif hybrid:
        shape = (max(world_size // per_node, 1), per_node)
    else:
        return init_device_mesh(device_type, (world_size,))
    if len(shape) == 2 and shape[0] * shape[1] != world_size:
        raise ValueError(f"FSDPStrategy(device_mesh={shape}): {shape[0]} x {shape[1]} is not the world size {world_size}.")
    return init_device_mesh(device_type, shape, mesh_dim_names=("replicate", "shard")[-len(shape) :])
