"""Walking the tensors of a nested value (tensors inside lists, tuples, named
tuples and dicts): the kernel's one home for moving a batch or a result to
a device. Strategies (built-in or not) and launchers use these."""

from __future__ import annotations

from typing import Any

import torch


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device`` (non-blocking);
    other objects with a ``to`` method are moved too, anything else is kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(b, device) for b in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device)) for k, v in batch.items())
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (dicts, lists, tuples, named tuples)
    detached and moved to the CPU, so it can be saved and read without a device."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value) if not hasattr(value, "_fields") else type(value)(*(to_cpu(v) for v in value))
    return value
