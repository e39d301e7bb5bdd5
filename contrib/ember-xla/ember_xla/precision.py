"""``precision="xla-bf16"``: parameters and floating-point inputs in bfloat16.

The XLA devices (TPUs above all) compute natively in bfloat16, so this is
plain bfloat16 weights and activations (no autocast, no loss scaling), the
role the deprecated ``XLA_USE_BF16=1`` variable used to play. It runs on any
device; only XLA hardware makes it fast.
"""

from __future__ import annotations

import torch

from ember.plugins.precision.true_precision import TruePrecision


def xla_bf16_precision() -> TruePrecision:
    return TruePrecision(torch.bfloat16, "xla-bf16")
