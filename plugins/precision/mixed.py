"""Mixed-precision plugins: ``16-mixed`` and ``bf16-mixed``.

Parameters, gradients and optimizer state stay in float32; the forward pass
(every ``*_step`` call) runs under ``torch.autocast`` so that the operations
autocast lists (matrix products, convolutions, ...) compute in float16 or
bfloat16.

- ``bf16-mixed``: autocast to bfloat16. bfloat16 has float32's exponent range,
  so no loss scaling is needed. Runs on CPU and CUDA (and on MPS where the
  installed torch supports bfloat16 autocast there).
- ``16-mixed``: autocast to float16 plus a ``torch.amp.GradScaler``: the loss
  is multiplied by a scale factor before the backward pass so small gradients
  do not underflow, gradients are unscaled before clipping and
  ``on_before_optimizer_step``, and steps whose gradients overflowed are
  skipped while the scale is lowered. The scaler's state is part of the
  checkpoint (``checkpoint["precision"]``). On CPU it works only where the
  installed torch supports float16 CPU autocast and ``GradScaler("cpu")``
  (torch 2.3 and later); elsewhere a clear error suggests ``bf16-mixed``.

The device type autocast needs is read from the module's parameters the first
time a step runs after ``convert_module`` (strategies move the module to its
device after converting it), or set explicitly with ``device_type=``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch

from ember.optim import step_with_closure
from ember.plugin_manager import hookimpl


class MixedPrecision:
    """``torch.autocast`` around the steps; with float16, loss scaling too."""

    converts_input = False

    def __init__(
        self,
        dtype: torch.dtype = torch.bfloat16,
        name: str | None = None,
        device_type: str | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"MixedPrecision autocasts to float16 or bfloat16, not {dtype}.")
        self.dtype = dtype
        self.name = name or ("16-mixed" if dtype == torch.float16 else "bf16-mixed")
        #: Whether the loss is scaled (float16 only); the loop skips unscaling otherwise.
        self.scales_gradients = dtype == torch.float16
        if scaler is not None and not self.scales_gradients:
            raise ValueError("A GradScaler is only used with float16 (16-mixed); bfloat16 needs no loss scaling.")
        self.scaler = scaler
        self._device_type = device_type
        self._fixed_device_type = device_type is not None
        self._module: torch.nn.Module | None = None
        self._pending_scaler_state: dict[str, Any] | None = None
        self._warned_cpu = False

    # ------------------------------------------------------------------ device
    @property
    def device_type(self) -> str:
        """``"cpu"``, ``"cuda"``, ``"mps"``: given, or read from the converted module's parameters."""
        if self._device_type is None:
            self._device_type = _device_type_of(self._module)
            self._check_supported(self._device_type)
        return self._device_type

    @device_type.setter
    def device_type(self, value: str) -> None:
        self._device_type = value
        self._fixed_device_type = True
        self._check_supported(value)

    def _check_supported(self, device_type: str) -> None:
        if self.dtype != torch.float16 or device_type != "cpu" or self._warned_cpu:
            return
        if not cpu_float16_supported():
            raise RuntimeError(
                f"precision='16-mixed' on CPU needs float16 CPU autocast and GradScaler('cpu'), which torch {torch.__version__} "
                "does not provide. Use precision='bf16-mixed' on CPU (no loss scaling needed), or run on a GPU."
            )
        self._warned_cpu = True
        warnings.warn(
            "precision='16-mixed' runs on CPU but is usually several times slower than '32-true' there; "
            "precision='bf16-mixed' is the mixed precision for CPUs.",
            UserWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ protocol
    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        # The strategy moves the module after this call, so the device type is
        # read later, the first time it is needed.
        self._module = module
        if not self._fixed_device_type:
            self._device_type = None
        return module

    def convert_input(self, batch: Any) -> Any:
        return batch

    def forward_context(self) -> ContextManager[Any]:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        if self.scales_gradients:
            loss = self._scaler_for(loss.device.type).scale(loss)
        loss.backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        if not self.scales_gradients:
            return step_with_closure(optimizer, closure)
        if isinstance(optimizer, torch.optim.LBFGS):
            raise TypeError(
                "precision='16-mixed' cannot drive LBFGS: its step re-evaluates the closure several times, "
                "which loss scaling does not support. Use precision='32-true' or 'bf16-mixed' with LBFGS."
            )
        # GradScaler.step refuses closures: run the closure (forward, scaled
        # backward, unscaling, hooks, clipping) first, then step on its gradients.
        result = closure() if closure is not None else None
        scaler = self.scaler
        if scaler is None:  # no backward went through this precision (nothing to step on)
            return result
        scaler.step(optimizer)
        scaler.update()
        return result

    def state_dict(self) -> dict[str, Any]:
        if self.scaler is not None:
            return {"scaler": self.scaler.state_dict()}
        if self._pending_scaler_state is not None:
            return {"scaler": dict(self._pending_scaler_state)}
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scaler_state = state.get("scaler") if state else None
        if not scaler_state:
            return
        if not self.scales_gradients:
            warnings.warn(
                f"The checkpoint holds GradScaler state (it was written with 16-mixed); {self.name} does not scale the loss and ignores it.",
                stacklevel=2,
            )
            return
        if self.scaler is not None:
            self.scaler.load_state_dict(scaler_state)
        else:
            self._pending_scaler_state = dict(scaler_state)

    # ------------------------------------------------------------------ helpers
    def _scaler_for(self, device_type: str) -> torch.amp.GradScaler:
        if self.scaler is None:
            self._check_supported(device_type)
            self.scaler = torch.amp.GradScaler(device_type)
            if self._pending_scaler_state is not None:
                self.scaler.load_state_dict(self._pending_scaler_state)
                self._pending_scaler_state = None
        return self.scaler

    def __getstate__(self) -> dict[str, Any]:
        # The module travels with the trainer on its own; a spawned worker
        # converts its copy again.
        state = self.__dict__.copy()
        state["_module"] = None
        if not state["_fixed_device_type"]:
            state["_device_type"] = None
        return state


def _device_type_of(module: torch.nn.Module | None) -> str:
    if module is not None:
        for tensor in module.parameters():
            return tensor.device.type
        for tensor in module.buffers():
            return tensor.device.type
    return "cpu"


_CPU_FLOAT16: bool | None = None


def cpu_float16_supported() -> bool:
    """Whether this torch autocasts to float16 on CPU and has ``GradScaler("cpu")``."""
    global _CPU_FLOAT16
    if _CPU_FLOAT16 is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # older torch warns and disables CPU autocast for float16
                with torch.autocast("cpu", dtype=torch.float16):
                    ok = torch.mm(torch.ones(1, 1), torch.ones(1, 1)).dtype == torch.float16
                torch.amp.GradScaler("cpu")
            _CPU_FLOAT16 = ok
        except Exception:
            _CPU_FLOAT16 = False
    return _CPU_FLOAT16


def half_mixed_precision() -> MixedPrecision:
    """Autocast to float16 with a ``GradScaler`` (loss scaling; its state is checkpointed)."""
    return MixedPrecision(torch.float16, "16-mixed")


def bf16_mixed_precision() -> MixedPrecision:
    """Autocast to bfloat16 on the module's device type (CPU, CUDA); float32 weights, no loss scaling."""
    return MixedPrecision(torch.bfloat16, "bf16-mixed")


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("precision", "16-mixed", half_mixed_precision)
    registry.add("precision", "bf16-mixed", bf16_mixed_precision)
