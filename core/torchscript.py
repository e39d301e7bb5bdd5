"""``Module.to_torchscript``: TorchScript export (``torch.jit.script`` or
``torch.jit.trace``), as Lightning's ``LightningModule.to_torchscript``.

TorchScript is deprecated in recent PyTorch in favour of ``torch.export``
(:func:`ember.export.to_torch_export`); this exists for code and deployments
that still load ``.pt`` TorchScript archives (``torch.jit.load``, LibTorch).

- ``method="script"`` compiles ``forward`` (and what it calls) with
  ``torch.jit.script``; ember's own properties (``trainer``, ``device``,
  ``global_step``, ...) are left out of the compilation.
- ``method="trace"`` records ``forward`` on ``example_inputs`` (default:
  ``example_input_array``) with ``torch.jit.trace``.

The module is exported in eval mode and its training flags are restored
afterwards. With ``file_path`` the archive is also written with ``torch.jit.save``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ember.export import ExportError, _device_of, _eval_mode, _resolve_sample, _to_device


class _NoTrainer:
    """Stands in for a missing trainer while TorchScript inspects the module:
    every attribute is missing (``hasattr`` is False) instead of raising."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _ember_properties(module: torch.nn.Module) -> list[str]:
    names: set[str] = set()
    for klass in type(module).__mro__:
        if klass.__module__.startswith("torch."):
            continue
        names.update(k for k, v in vars(klass).items() if isinstance(v, property))
    return sorted(names)


def _ember_attributes(module: torch.nn.Module) -> list[str]:
    """ember's bookkeeping attributes (annotated on ember's classes, or private
    instance attributes that torch's Module does not have)."""
    names: set[str] = set()
    for klass in type(module).__mro__:
        if klass.__module__.startswith("ember."):
            names.update(vars(klass).get("__annotations__", {}))
    torch_own = set(vars(torch.nn.Module()))
    names.update(k for k in vars(module) if k.startswith("_") and k not in torch_own)
    return sorted(names)


@contextlib.contextmanager
def _scriptable(module: torch.nn.Module) -> Iterator[None]:
    """TorchScript evaluates every attribute and compiles properties: keep ember's out."""
    klass = type(module)
    saved = {k: vars(klass)[k] for k in ("__jit_unused_properties__", "__jit_ignored_attributes__") if k in vars(klass)}
    old = saved.get("__jit_unused_properties__")
    klass.__jit_unused_properties__ = sorted(set(old or []) | set(_ember_properties(module)))  # type: ignore[attr-defined]
    ignored = saved.get("__jit_ignored_attributes__")
    klass.__jit_ignored_attributes__ = sorted(set(ignored or []) | set(_ember_attributes(module)))  # type: ignore[attr-defined]
    no_trainer = getattr(module, "_trainer", "absent") is None
    if no_trainer:
        object.__setattr__(module, "_trainer", _NoTrainer())
    try:
        yield
    finally:
        if no_trainer:
            object.__setattr__(module, "_trainer", None)
        for key in ("__jit_unused_properties__", "__jit_ignored_attributes__"):
            if key in saved:
                setattr(klass, key, saved[key])
            else:
                delattr(klass, key)


def to_torchscript(
    module: torch.nn.Module,
    file_path: str | os.PathLike[str] | None = None,
    method: str | None = "script",
    example_inputs: Any = None,
    **kwargs: Any,
) -> torch.jit.ScriptModule:
    """``module`` as a ``torch.jit.ScriptModule`` (scripted or traced); ``kwargs``
    go to ``torch.jit.script`` / ``torch.jit.trace``."""
    if method not in ("script", "trace"):
        raise ValueError(f"to_torchscript(method={method!r}): use 'script' or 'trace'.")
    with _eval_mode(module), _scriptable(module):
        try:
            if method == "script":
                scripted = torch.jit.script(module, **kwargs)
            else:
                sample = _to_device(_resolve_sample(module, example_inputs), _device_of(module))
                scripted = torch.jit.trace(module, example_inputs=sample, **kwargs)
        except ExportError:
            raise
        except Exception as exc:
            hint = " Try method='trace' with example_inputs=..., or to_torch_export()." if method == "script" else ""
            raise ExportError(f"torch.jit.{method} of {type(module).__name__} failed.{hint}\n{type(exc).__name__}: {exc}") from exc
    if file_path is not None:
        path = Path(file_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(scripted, os.fspath(path))
    return scripted
