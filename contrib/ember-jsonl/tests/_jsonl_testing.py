"""Helpers shared by ember-jsonl's tests (public ember API only)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.testing import quiet_trainer


def make_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class Regressor(ember.Module):
    def __init__(self, lr: float = 0.05, width: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self.net(x)
        self.log("val_loss", torch.nn.functional.mse_loss(pred, y))
        self.log("val_mae", (pred - y).abs().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def loaders() -> tuple[DataLoader, DataLoader]:
    return DataLoader(make_data(48, 0), batch_size=8, shuffle=True), DataLoader(make_data(16, 1), batch_size=8)


class Recording(ember.Logger):
    """A second logger: remembers exactly what it was given."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, Any]]] = []
        self.hparams: dict[str, Any] = {}

    def log_metrics(self, metrics, step):
        self.records.append((step, dict(metrics)))

    def log_hyperparams(self, params):
        self.hparams.update(params)


def trainer(tmp_path: Path, loggers: list, callbacks: list = (), **kwargs: Any) -> ember.Trainer:
    """ember.testing's quiet trainer with ``loggers``, logging every step, no sanity check, the Trainer's own epochs and fault tolerance."""
    defaults = {"log_every_n_steps": 1, "num_sanity_val_steps": 0, "max_epochs": None, "enable_fault_tolerance": None}
    return quiet_trainer(tmp_path, logger=loggers, callbacks=list(callbacks), **{**defaults, **kwargs})


def ember_command() -> list[str]:
    """The installed ``ember`` console script, next to this interpreter."""
    script = Path(sys.executable).parent / "ember"
    if script.exists():
        return [str(script)]
    found = shutil.which("ember")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from ember.cli import main; sys.exit(main())"]
