"""Shared helpers for the kernel tests: small regression data, a linear
module whose steps the tests can steer, a recording logger and callback, and
a quiet trainer factory (no default observers unless a test asks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.testing import quiet_trainer as ember_quiet_trainer

WEIGHTS = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def regression_data(n: int = 32, seed: int = 0, features: int = 4) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = x[:, :4] @ WEIGHTS + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def loader(n: int = 32, batch_size: int = 8, seed: int = 0, shuffle: bool = False) -> DataLoader:
    """``n // batch_size`` batches (plus a short one when it does not divide)."""
    return DataLoader(regression_data(n, seed), batch_size=batch_size, shuffle=shuffle)


class Regressor(ember.Module):
    """Linear regression on 4 features with SGD.

    ``step_hook(module, batch, batch_idx)`` (if set) runs first in
    ``training_step``; returning something other than ``...`` replaces the
    step's return value (e.g. ``None`` to skip the batch).
    """

    def __init__(self, lr: float = 0.05, optimizer: str = "sgd") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.lr = lr
        self.optimizer_name = optimizer
        self.step_hook: Callable[..., Any] | None = None
        self.train_batches: list[torch.Tensor] = []
        self.val_calls = 0
        self.sanity_val_calls = 0
        self.test_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.train_batches.append(batch[0].detach().clone())
        if self.step_hook is not None:
            replaced = self.step_hook(self, batch, batch_idx)
            if replaced is not ...:
                return replaced
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.trainer.sanity_checking:
            self.sanity_val_calls += 1
        else:
            self.val_calls += 1
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.test_calls += 1
        self.log("test_loss", self.loss(batch))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch[0])  # batches are (x, y); the default predict_step passes the whole batch

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TrainOnly(Regressor):
    validation_step = ember.Module.validation_step  # type: ignore[assignment]


class RecordingLogger(ember.Logger):
    """Keeps every ``(step, metrics)`` it receives, and the hyperparameters."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []
        self.hparams: list[dict[str, Any]] = []
        self.finalized: list[str] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.hparams.append(dict(params))

    def finalize(self, status: str) -> None:
        self.finalized.append(status)

    def steps_with(self, key: str) -> list[tuple[int, float]]:
        return [(step, m[key]) for step, m in self.records if key in m]


class Counter(ember.Callback):
    """Counts validation runs (outside the sanity check) and records the
    global step and epoch at each."""

    def __init__(self) -> None:
        self.val_runs: list[tuple[int, int]] = []
        self.sanity_runs = 0
        self.train_batches = 0

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        self.val_runs.append((trainer.current_epoch, trainer.global_step))

    def on_sanity_check_end(self, trainer: Any, module: Any) -> None:
        self.sanity_runs += 1

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.train_batches += 1


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


def params_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=False))


@pytest.fixture
def make_trainer(tmp_path: Any) -> Callable[..., ember.Trainer]:
    def factory(**kwargs: Any) -> ember.Trainer:
        return quiet_trainer(tmp_path, **kwargs)

    return factory


@pytest.fixture
def fresh_dynamo() -> Any:
    """dynamo's caches emptied before and after the test, so that code compiled
    for one test never serves another (the compile tests use it)."""
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def _restore_determinism() -> Any:
    """Tests that pass ``deterministic=True`` change a process-wide torch flag."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


class _Helpers:
    """What the ``h`` fixture gives: the helpers above, as attributes."""

    Regressor = Regressor
    TrainOnly = TrainOnly
    RecordingLogger = RecordingLogger
    Counter = Counter
    regression_data = staticmethod(regression_data)
    loader = staticmethod(loader)
    params_of = staticmethod(params_of)
    same = staticmethod(same)
    quiet_trainer = staticmethod(quiet_trainer)


@pytest.fixture
def h() -> type[_Helpers]:
    return _Helpers
