"""Extras of :class:`~ember.plugins.profilers.pytorch.TorchProfiler` that
Lightning's ``PyTorchProfiler`` has.

- :class:`ModuleRanges` (``record_module_names=True``, the default): every
  submodule's forward runs inside a ``record_function`` range named
  ``"[module] {qualified name}: {class}"`` (``"[module] blocks.0: Block"``;
  the root is ``"[module] <root>: Net"``), so the trace and the operator table
  show which layer launched which operators. The hooks exist only while the
  profiler records.
- :class:`NVTXRanges` (``emit_nvtx=True``): instead of ``torch.profiler``,
  ``torch.autograd.profiler.emit_nvtx`` marks every operator with an NVTX
  range for an external CUDA profiler (``nsys profile python train.py``); no
  trace file is written by ember. Needs CUDA.
"""

from __future__ import annotations

from typing import Any

import torch


class ModuleRanges:
    """``record_function`` ranges around the forward of every submodule of ``module``."""

    def __init__(self, module: torch.nn.Module) -> None:
        from torch.profiler import record_function

        self._open: dict[int, list[Any]] = {}
        self._handles: list[Any] = []
        for name, sub in module.named_modules():
            label = f"[module] {name or '<root>'}: {type(sub).__name__}"

            def enter(m: torch.nn.Module, args: Any, label: str = label) -> None:
                scope = record_function(label)
                scope.__enter__()
                self._open.setdefault(id(m), []).append(scope)

            def leave(m: torch.nn.Module, args: Any, output: Any) -> None:
                stack = self._open.get(id(m))
                if stack:
                    stack.pop().__exit__(None, None, None)

            self._handles.append(sub.register_forward_pre_hook(enter))
            self._handles.append(sub.register_forward_hook(leave, always_call=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for stack in self._open.values():
            while stack:
                stack.pop().__exit__(None, None, None)
        self._open = {}


class NVTXRanges:
    """What the profiler drives (start / step / stop) when ``emit_nvtx=True``."""

    def __init__(self, record_shapes: bool) -> None:
        if not torch.cuda.is_available():
            raise ValueError(
                "TorchProfiler(emit_nvtx=True) marks CUDA work with NVTX ranges for nsys/nvprof, and no CUDA device is "
                "available: run on a GPU under `nsys profile`, or use emit_nvtx=False for torch.profiler traces."
            )
        self._context = torch.autograd.profiler.emit_nvtx(record_shapes=record_shapes)

    def start(self) -> None:
        self._context.__enter__()

    def step(self) -> None:
        pass

    def stop(self) -> None:
        self._context.__exit__(None, None, None)
