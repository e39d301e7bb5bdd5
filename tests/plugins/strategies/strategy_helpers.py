"""What the multi-process strategy tests share: quiet trainer settings, a
small regression dataset and module, a planned crash after a checkpoint, and a torchrun
launch of a script on two processes. A plain module (not a conftest) because spawned
workers re-import the test modules, and with them this one, by name."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import torch
from torch.utils.data import TensorDataset

import ember

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
    """A 4-8-1 tanh network fitted to :func:`regression_data` with SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class ShardableNet(ember.Module):
    """Two children to shard and a parameter of the root's own (FSDP shards it with the root)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
        self.head = torch.nn.Linear(8, 1)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) * self.scale


class Crash(Exception):
    """The planned failure :class:`SaveThenCrash` raises."""


class SaveThenCrash(ember.Callback):
    """Save ``path`` at optimizer step ``at_step``, then fail the run."""

    def __init__(self, path: str, at_step: int) -> None:
        self.path, self.at_step = path, at_step

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.at_step:
            trainer.save_checkpoint(self.path)  # every rank takes part; rank zero writes
            raise Crash(f"planned crash at step {self.at_step}")


#: what another launcher may have set; torchrun sets its own
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def run_torchrun(script: Any, cwd: Any, timeout: float) -> subprocess.CompletedProcess[str]:
    """``script`` on two local processes under torchrun (``--standalone``), one thread each."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
