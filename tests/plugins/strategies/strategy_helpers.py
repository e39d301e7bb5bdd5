"""What the multi-process strategy tests share: quiet trainer settings and a
small regression dataset. A plain module (not a conftest) because spawned
workers re-import the test modules, and with them this one, by name."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

QUIET = {
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
    "num_sanity_val_steps": 0,
}


def regression_data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)
