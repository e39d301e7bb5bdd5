"""Helpers shared by ember-ema's tests (public ember API only)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.testing import quiet_trainer


def make_data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class Regressor(ember.Module):
    """A two-layer regressor with a batch norm (so buffers are averaged too)."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lr = lr
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        self.val_weights_seen: list[dict[str, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.val_weights_seen.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def loaders(batch_size: int = 8):
    train = DataLoader(make_data(48, seed=0), batch_size=batch_size, shuffle=False)
    val = DataLoader(make_data(16, seed=1), batch_size=16)
    return train, val


def trainer(tmp_path: Path, callbacks: list, **kwargs) -> ember.Trainer:
    """ember.testing's quiet trainer, with no sanity check and the Trainer's own epochs and fault tolerance."""
    return quiet_trainer(
        tmp_path, callbacks=callbacks, **{"num_sanity_val_steps": 0, "max_epochs": None, "enable_fault_tolerance": None, **kwargs}
    )


def ember_command() -> list[str]:
    """The installed ``ember`` console script, next to this interpreter."""
    script = Path(sys.executable).parent / "ember"
    if script.exists():
        return [str(script)]
    found = shutil.which("ember")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from ember.cli import main; sys.exit(main())"]
