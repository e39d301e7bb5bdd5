"""Full-precision plugins: ``32-true`` and ``64-true``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch

from ember.optim import step_with_closure
from ember.plugin_manager import hookimpl
from ember.tensors import apply_to_tensors

# nullcontext is reentrant and stateless: one instance serves every step.
_NO_CONTEXT = contextlib.nullcontext()


class TruePrecision:
    """Parameters and inputs in one floating-point dtype, no autocast."""

    #: No loss scaling, so ``unscale_gradients`` is a no-op the loop may skip.
    scales_gradients = False

    @property
    def steps_directly(self) -> bool:
        """``backward`` is ``loss.backward()`` and ``optimizer_step`` is
        ``step_with_closure``, so the loop may make those calls itself
        (:class:`ember.roles.StepsDirectly`); a subclass that overrides either is not bypassed."""
        cls = type(self)
        return cls.backward is TruePrecision.backward and cls.optimizer_step is TruePrecision.optimizer_step

    def __init__(self, dtype: torch.dtype = torch.float32, name: str = "32-true") -> None:
        self.dtype = dtype
        self.name = name

    @property
    def converts_input(self) -> bool:
        """Whether ``convert_input`` changes anything (strategies skip it otherwise)."""
        return self.dtype != torch.float32

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module if self.dtype == torch.float32 else module.to(dtype=self.dtype)

    def convert_input(self, batch: Any) -> Any:
        if self.dtype == torch.float32:
            return batch
        return _cast_floats(batch, self.dtype)

    def forward_context(self) -> ContextManager[Any]:
        return _NO_CONTEXT

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        loss.backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return step_with_closure(optimizer, closure)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _cast_floats(data: Any, dtype: torch.dtype) -> Any:
    """``data`` with its floating-point tensors in ``dtype`` (the kernel's walker keeps the containers)."""
    return apply_to_tensors(data, lambda t: t.to(dtype) if t.is_floating_point() else t)


def double_precision() -> TruePrecision:
    return TruePrecision(torch.float64, "64-true")


def single_precision() -> TruePrecision:
    return TruePrecision(torch.float32, "32-true")


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("precision", "32-true", single_precision)
    registry.add("precision", "64-true", double_precision)
