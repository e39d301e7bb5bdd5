"""Helpers for the vendor logger tests (TensorBoard, W&B, MLflow), imported by
``test_tensorboard.py``, ``test_wandb.py`` and ``test_mlflow.py``.

Each test fits :class:`LoggedModule` with a :class:`Recorder` next to the
logger under test; the recorder keeps exactly what the trainer handed to the
loggers, so what the vendor's store holds can be compared with it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from typing import Any

import torch

import ember
from ember.callback import Logger

# Values every test fit logs: train_loss per step, train_mean per epoch, val_loss per validation.
STEP_KEY, EPOCH_KEY, VAL_KEY = "train_loss", "train_mean", "val_loss"
BATCHES_PER_EPOCH = 4


class LoggedModule(ember.Module):
    """Linear regression that logs a per-step, a per-epoch and a validation metric
    and saves its hyperparameters."""

    def __init__(self, lr: float = 0.05, width: int = 4, note: str = "tiny", opt: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log(STEP_KEY, loss)
        self.log(EPOCH_KEY, loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log(VAL_KEY, torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


class Recorder(Logger):
    """Keeps every ``log_metrics`` call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []
        self.hparams: dict[str, Any] = {}

    @property
    def state_key(self) -> str:
        return f"Recorder-{id(self)}"

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any) -> None:
        self.hparams.update(params)

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Per key, the (step, value) pairs a store should hold: in order, a
        value repeated at the same step kept once."""
        out: dict[str, list[tuple[int, float]]] = {}
        for step, metrics in self.calls:
            for key, value in metrics.items():
                points = out.setdefault(key, [])
                if (step, value) not in points:
                    points.append((step, float(value)))
        return out


def assert_same_series(got: dict[str, list[tuple[int, float]]], expected: dict[str, list[tuple[int, float]]], rel: float = 1e-6) -> None:
    """Same keys, same steps in the same order, values equal (to float32 precision by default)."""
    assert sorted(got) == sorted(expected)
    for key, points in expected.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        for (step, a), (_, b) in zip(got[key], points, strict=True):
            assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-7), (key, step, a, b)


def check_series_shape(series: dict[str, list[tuple[int, float]]], epochs: int, every: int) -> None:
    """What the kernel should have logged for LoggedModule: the step metric
    every ``every`` optimizer steps, the epoch aggregates once per epoch at
    the epoch's last step, steps strictly increasing per key."""
    last = epochs * BATCHES_PER_EPOCH
    assert [s for s, _ in series[STEP_KEY]] == list(range(every, last + 1, every))
    ends = list(range(BATCHES_PER_EPOCH, last + 1, BATCHES_PER_EPOCH))
    assert [s for s, _ in series[EPOCH_KEY]] == ends
    assert [s for s, _ in series[VAL_KEY]] == ends
    for key, points in series.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{key}: steps not strictly increasing: {steps}"


def make_loaders() -> tuple[Any, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    def loader(n: int, seed: int) -> DataLoader:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=8)

    return loader(8 * BATCHES_PER_EPOCH, 0), loader(16, 1)


def run_fit(
    root: Any,
    loggers: list[Logger],
    epochs: int = 3,
    every: int = 1,
    ckpt_path: str | None = None,
    module: ember.Module | None = None,
    **kwargs: Any,
) -> ember.Trainer:
    """One quiet fit of LoggedModule (4 training batches, 2 validation batches per epoch)."""
    torch.manual_seed(0)
    kwargs.setdefault("enable_checkpointing", False)
    trainer = ember.Trainer(
        default_root_dir=root,
        max_epochs=epochs,
        log_every_n_steps=every,
        logger=loggers,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        **kwargs,
    )
    train, val = make_loaders()
    trainer.fit(module if module is not None else LoggedModule(), train, val, ckpt_path=ckpt_path)
    return trainer


def assert_lazy_import(module: str, vendors: tuple[str, ...]) -> None:
    """Importing the logger module, and building a Trainer (which registers every
    built-in plugin), imports none of ``vendors``."""
    code = textwrap.dedent(
        f"""
        import sys
        import {module}
        import ember
        ember.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in {vendors!r} or m.startswith('torch.utils.tensorboard'))
        print(repr(loaded))
        """
    )
    env = {**os.environ, "EMBER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
