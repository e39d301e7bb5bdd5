"""Shared helpers for the built-in plugin tests: a tiny regression module
whose logged metrics the tests can dictate, and a quiet trainer factory."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.testing import quiet_trainer as ember_quiet_trainer


def make_loader(n: int = 32, batch_size: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class TinyRegressor(ember.Module):
    """Linear regression on 4 features.

    ``val_scores[epoch]`` (if given) is logged as ``score`` from
    ``validation_step``; ``train_scores[epoch]`` as ``train_score`` from
    ``training_step`` (epoch-level). The tests choose these values, so they
    know which epoch is best.
    """

    def __init__(self, val_scores: list[float] | None = None, train_scores: list[float] | None = None, lr: float = 0.05) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.val_scores = val_scores
        self.train_scores = train_scores
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        if self.train_scores is not None:
            self.log("train_score", float(self.train_scores[self.current_epoch]), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("val_loss", loss, prog_bar=True)
        if self.val_scores is not None:
            self.log("score", float(self.val_scores[self.current_epoch]))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y), prog_bar=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch[0])  # batches are (x, y); the default predict_step passes the whole batch

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TrainOnly(TinyRegressor):
    """No validation at all: the epoch-end checks happen at train-epoch end."""

    validation_step = ember.Module.validation_step  # type: ignore[assignment]


#: What ember's own suite adds to ember.testing's QUIET_DEFAULTS (None: the Trainer's default).
SUITE_DEFAULTS: dict[str, Any] = {
    "num_sanity_val_steps": 0,
    "accelerator": "cpu",
    "devices": 1,
    "max_epochs": None,
    "enable_fault_tolerance": None,
}


def quiet_trainer(tmp_path: Any, **kwargs: Any) -> ember.Trainer:
    """:func:`ember.testing.quiet_trainer` with this suite's settings: no sanity
    check, one CPU device, and the Trainer's own ``max_epochs`` and fault
    tolerance unless a test sets them."""
    return ember_quiet_trainer(tmp_path, **{**SUITE_DEFAULTS, **kwargs})


@pytest.fixture
def loaders() -> tuple[DataLoader, DataLoader]:
    """4 training batches and 2 validation batches."""
    return make_loader(32, 8, seed=0), make_loader(16, 8, seed=1)


@pytest.fixture
def make_trainer(tmp_path: Any) -> Any:
    """``make_trainer(**trainer_kwargs)``: a quiet trainer rooted in ``tmp_path``."""

    def factory(**kwargs: Any) -> ember.Trainer:
        return quiet_trainer(tmp_path, **kwargs)

    return factory


@pytest.fixture
def regressor() -> type[TinyRegressor]:
    return TinyRegressor


@pytest.fixture
def train_only() -> type[TrainOnly]:
    return TrainOnly
