"""Half-width "true" precision plugins: ``bf16-true`` and ``16-true``.

Like ``64-true`` does with float64, the module's floating-point parameters
and buffers and every floating-point tensor of each batch are cast to one
dtype; there is no autocast and no loss scaling. This halves the memory of
weights, gradients and optimizer state, at the cost of accuracy in the
optimizer update (small updates to large weights round away), so it suits
fine-tuning and inference more than long training from scratch.

Both run on CPU with the installed torch (the common layers have bfloat16
and float16 CPU kernels); float16 has a narrow exponent range, so without
loss scaling very small gradients can flush to zero.
"""

from __future__ import annotations

import torch

from ember.plugin_manager import hookimpl
from ember.plugins.precision.true_precision import TruePrecision


class HalfTruePrecision(TruePrecision):
    """Parameters and floating inputs in bfloat16 or float16."""

    # ``converts_input`` (inherited) is True: every floating batch tensor is cast.

    def __init__(self, dtype: torch.dtype = torch.bfloat16, name: str | None = None) -> None:
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"HalfTruePrecision holds bfloat16 or float16, not {dtype}.")
        super().__init__(dtype, name or ("bf16-true" if dtype == torch.bfloat16 else "16-true"))


def bf16_true_precision() -> HalfTruePrecision:
    """Parameters, buffers and floating inputs in bfloat16; no autocast, no loss scaling."""
    return HalfTruePrecision(torch.bfloat16, "bf16-true")


def half_true_precision() -> HalfTruePrecision:
    """Parameters, buffers and floating inputs in float16; no autocast, no loss scaling."""
    return HalfTruePrecision(torch.float16, "16-true")


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("precision", "bf16-true", bf16_true_precision)
    registry.add("precision", "16-true", half_true_precision)
