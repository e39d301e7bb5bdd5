"""``fsdp`` (FSDP2) with real processes on gloo (2 CPU processes).

The modules used by spawned workers live at the top of this file: the spawn
start method re-imports them by name in each worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.strategies.fsdp import FSDPStrategy, is_sharded_checkpoint, optimizer_state_to_ids, optimizer_state_to_names

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

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


class Regressor(ember.Module):
    """Two sharded children and a parameter of the root's own (sharded with the root)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
        self.head = torch.nn.Linear(8, 1)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) * self.scale

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        # Calls a child directly and uses the root's own parameter: needs the root gathered.
        self.log("val_loss", torch.nn.functional.mse_loss(self.head(self.body(x)) * self.scale, y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.02)


def single_process_weights(epochs: int, global_batch: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    module = Regressor()
    ember.Trainer(devices=1, max_epochs=epochs, **QUIET).fit(module, DataLoader(regression_data(), batch_size=global_batch))
    return module.state_dict()


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert set(got) == set(expected)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], atol=atol, rtol=0, msg=name)


# --------------------------------------------------------------------------- spawn == one process on the global batch


@pytest.mark.timeout(60)
def test_two_processes_match_one_process_on_the_global_batch(no_launcher_env: None) -> None:
    expected = single_process_weights(epochs=2, global_batch=16)
    torch.manual_seed(3)
    module = Regressor()
    trainer = ember.Trainer(strategy="fsdp", devices=2, max_epochs=2, limit_val_batches=2, **QUIET)
    assert isinstance(trainer.strategy, FSDPStrategy) and trainer.strategy.launcher.should_launch()
    loader = DataLoader(regression_data(), batch_size=8)
    trainer.fit(module, loader, loader)
    assert_same(module.state_dict(), expected)
    assert trainer.global_step == 8  # 64 samples / 2 ranks / 8 per batch = 4 steps per epoch
    assert "val_loss" in trainer.callback_metrics
    assert trainer.state.status == "finished"
