"""A failing or hung rank ends a torchrun job quickly and is named by its rank.

Real ``torchrun`` jobs of two processes on gloo (slow tier). Before the fix, a
rank that raised blocked in the ``on_exception`` checkpoint save (a collective
its peer never joined) and in the exit barrier: the job was still running
after 300 s (torch's default collective timeout is 30 minutes).
"""

from __future__ import annotations

import datetime
import subprocess
import textwrap
import time
from typing import Any

import pytest
import torch
from strategy_helpers import run_torchrun

from ember.plugins.strategies.ddp import DDPStrategy
from ember.plugins.strategies.rank_failure import DEFAULT_TIMEOUT

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

SCRIPT = """
import os, sys, time
import torch
from torch.utils.data import DataLoader, TensorDataset
import ember
from ember.plugins.strategies.ddp import DDPStrategy

MODE = {mode!r}

class Net(ember.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if self.trainer.global_rank == 1 and self.trainer.global_step == 2:
            with open("event-time", "w") as f:
                f.write(repr(time.time()))
            if MODE == "raise":
                raise RuntimeError("planned failure in rank 1")
            time.sleep(300)  # hung
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

x = torch.randn(64, 4)
trainer = ember.Trainer(
    strategy=DDPStrategy(timeout={timeout}),
    max_epochs=1,
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
    default_root_dir=os.getcwd(),
    enable_fault_tolerance={fault_tolerance},  # on: its on_exception checkpoint save is what used to block
)
trainer.fit(Net(), DataLoader(TensorDataset(x, x[:, :1]), batch_size=4))
"""


def torchrun(tmp_path: Any, mode: str, timeout: float | None, fault_tolerance: bool) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the job; returns it and the seconds from rank 1's failure (or hang) until the job ended."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT.format(mode=mode, timeout=timeout, fault_tolerance=fault_tolerance)))
    proc = run_torchrun(script, tmp_path, timeout=240)
    ended = time.time()
    event = float((tmp_path / "event-time").read_text())
    return proc, ended - event


def root_cause_rank(output: str) -> str:
    block = output.split("Root Cause (first observed failure):", 1)[1]
    return block.split("rank      :", 1)[1].split("(", 1)[0].strip()


@pytest.mark.slow
@pytest.mark.timeout(260)
def test_a_rank_that_raises_ends_the_job_within_ten_seconds_and_is_named(tmp_path: Any) -> None:
    proc, seconds = torchrun(tmp_path, "raise", timeout=None, fault_tolerance=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "RuntimeError: planned failure in rank 1" in output
    assert root_cause_rank(output) == "1", output[-3000:]
    assert seconds < 10, f"the job ended {seconds:.1f} s after rank 1 raised"
    assert not (tmp_path / "checkpoints" / "on_exception.ckpt").exists()
    print(f"job ended {seconds:.1f} s after rank 1 raised")


@pytest.mark.slow
@pytest.mark.timeout(260)
def test_a_hung_rank_is_named_by_the_healthy_one_after_the_timeout(tmp_path: Any) -> None:
    # FaultTolerance off: it defers SIGTERM to the end of the batch, which a hung
    # rank never reaches, so torchrun would wait its 30 s before SIGKILL.
    proc, seconds = torchrun(tmp_path, "hang", timeout=3, fault_tolerance=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ember: rank(s) 1 (of 2) did not reach a collective within the timeout (0:00:03): hung or dead" in output, output[-3000:]
    assert "This rank (0) is healthy" in output
    assert seconds < 3 + 3 + 10, f"the job ended {seconds:.1f} s after rank 1 hung"  # timeout + roll call + exit
    print(f"job ended {seconds:.1f} s after rank 1 hung")


def test_timeout_default_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBER_DIST_TIMEOUT", raising=False)
    assert DDPStrategy().timeout == DEFAULT_TIMEOUT == datetime.timedelta(minutes=10)
    assert DDPStrategy(timeout=90).timeout == datetime.timedelta(seconds=90)
    assert DDPStrategy(timeout=datetime.timedelta(minutes=2)).timeout == datetime.timedelta(minutes=2)
    monkeypatch.setenv("EMBER_DIST_TIMEOUT", "45")
    assert DDPStrategy().timeout == datetime.timedelta(seconds=45)
    assert DDPStrategy(timeout=7).timeout == datetime.timedelta(seconds=7)  # the argument wins
    monkeypatch.setenv("EMBER_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="EMBER_DIST_TIMEOUT='soon'"):
        DDPStrategy()
    with pytest.raises(ValueError, match="must be positive"):
        DDPStrategy(timeout=0)


def test_timeout_from_a_stack_file(tmp_path: Any) -> None:
    import ember
    from ember.stack import build, load_stack

    (tmp_path / "net_module.py").write_text("import torch, ember\nclass Net(ember.Module):\n    pass\n")
    (tmp_path / "ember.toml").write_text(
        '[model]\nclass_path = "net_module:Net"\n\n[trainer]\naccelerator = "cpu"\nlogger = false\n\n'
        '[trainer.strategy]\nname = "ddp"\ninit_args = {timeout = 120}\n'
    )
    stack = load_stack(cwd=tmp_path, environ={})
    _, _, kwargs = build(stack)
    trainer = ember.Trainer(**kwargs)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy.timeout == datetime.timedelta(seconds=120)
    with pytest.raises(ValueError, match="a strategy table holds name"):
        ember.Trainer(strategy={"name": "ddp", "timeout": 120}, accelerator="cpu", logger=False)
