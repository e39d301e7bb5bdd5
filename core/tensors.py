"""Walking the tensors of a nested value: the kernel's one tensor walker.

:func:`apply_to_tensors` rebuilds a value with a function applied to every
tensor inside lists, tuples, named tuples, dicts (their type kept:
``OrderedDict``, ``defaultdict``, subclasses) and dataclass instances (a copy
with its fields replaced). :func:`move_to_device` and :func:`to_cpu` are built
on it; strategies (built-in or not), precisions, launchers and the export
helpers use these instead of walking containers themselves."""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["apply_to_tensors", "move_to_device", "to_cpu"]


def _keep(value: Any) -> Any:
    return value


def apply_to_tensors(
    value: Any,
    fn: Callable[[torch.Tensor], Any],
    other: Callable[[Any], Any] = _keep,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """``value`` with ``fn(t)`` in place of every tensor ``t`` in it, and
    ``other(x)`` in place of every other leaf (default: kept as it is).

    Containers are rebuilt with their own type: lists, tuples and their
    subclasses, named tuples, dicts (``defaultdict`` keeps its
    ``default_factory``) and dataclass instances (a shallow copy whose fields
    hold the walked values, so frozen dataclasses and ``init=False`` fields
    work). Strings, bytes and anything else are leaves, and so is any
    non-tensor value for which ``is_leaf(value)`` is true (it goes to
    ``other`` without being walked into)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if is_leaf is not None and is_leaf(value):
        return other(value)
    if isinstance(value, (list, tuple)):
        items = [apply_to_tensors(v, fn, other, is_leaf) for v in value]
        if hasattr(value, "_fields"):  # a named tuple takes its fields positionally
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, dict):
        pairs = [(k, apply_to_tensors(v, fn, other, is_leaf)) for k, v in value.items()]
        if isinstance(value, defaultdict):
            return type(value)(value.default_factory, pairs)
        return type(value)(pairs)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        walked = copy.copy(value)
        for field in dataclasses.fields(value):
            object.__setattr__(walked, field.name, apply_to_tensors(getattr(value, field.name), fn, other, is_leaf))
        return walked
    return other(value)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device`` (non-blocking);
    other objects with a ``to`` method (a dataclass batch with its own ``to``
    too) are moved by it, anything else is kept."""

    def move_other(obj: Any) -> Any:
        to = getattr(obj, "to", None)
        return to(device) if callable(to) else obj

    return apply_to_tensors(batch, lambda t: t.to(device, non_blocking=True), move_other, _has_to)


def _has_to(obj: Any) -> bool:
    return not isinstance(obj, (list, tuple, dict)) and callable(getattr(obj, "to", None))


def _detached_cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().cpu()


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (dicts, lists, tuples, named tuples,
    dataclasses) detached and moved to the CPU, so it can be saved and read
    without a device."""
    return apply_to_tensors(value, _detached_cpu)
