"""Preemption (SIGTERM) and on-exception checkpoints, in-process and in a real
child process that is signalled from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.callbacks.fault_tolerance import FaultTolerance


class _Net(ember.Module):
    def __init__(self, fail_at: int = -1) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.fail_at:
            raise RuntimeError("planned failure")
        x, y = batch
        return torch.nn.functional.mse_loss(self.layers(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.01)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4, shuffle=True)


def _trainer(root: Path, *callbacks: Any, **kwargs: Any) -> ember.Trainer:
    return ember.Trainer(
        max_epochs=3,
        default_root_dir=root,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


class _SignalAt(ember.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_fault_tolerance_is_a_default_callback(tmp_path: Path) -> None:
    assert any(isinstance(cb, FaultTolerance) for cb in _trainer(tmp_path, enable_fault_tolerance=True).callbacks)
    assert not any(isinstance(cb, FaultTolerance) for cb in _trainer(tmp_path, enable_fault_tolerance=False).callbacks)


def test_sigterm_finishes_the_step_saves_and_resumes_exactly(tmp_path: Path) -> None:
    ember.seed_everything(3)
    reference = _Net()
    _trainer(tmp_path / "ref").fit(reference, _loader())

    ember.seed_everything(3)
    trainer = _trainer(tmp_path, _SignalAt(step=13))
    with pytest.raises(ember.Preempted) as info:
        trainer.fit(_Net(), _loader())
    assert info.value.code == ember.EXIT_PREEMPTED
    assert trainer.global_step == 14, "the step in progress when the signal came must finish"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the previous handler is restored"
    saved = torch.load(trainer.resume_checkpoint_path, weights_only=True)
    assert saved["global_step"] == 14

    ember.seed_everything(777)
    resumed = _Net()
    again = _trainer(tmp_path, auto_resume=True)
    again.fit(resumed, _loader())
    assert again.global_step == 30
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
    assert not os.path.exists(again.resume_checkpoint_path), "a finished run removes its resume file"


def test_on_exception_checkpoint_holds_the_state_before_the_failing_step(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, FaultTolerance(on_exception=True))
    with pytest.raises(RuntimeError, match="planned failure"):
        trainer.fit(_Net(fail_at=7), _loader())
    saved = torch.load(tmp_path / "checkpoints" / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == 7
    assert saved["loops"]["fit"]["batches_done"] == 7


def test_unknown_signal_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="SIGTREM.*SIGTERM"):
        FaultTolerance(signals=("SIGTREM",))


CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from torch.utils.data import DataLoader, TensorDataset
    import ember

    class Slow(ember.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
        def training_step(self, batch, batch_idx):
            time.sleep(0.05)
            if self.global_step == 3:
                print("READY", flush=True)
            return self.layer(batch[0]).pow(2).mean()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)
        def on_fit_start(self):
            print("START", self.global_step, flush=True)

    ember.seed_everything(0)
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    trainer = ember.Trainer(max_epochs=2, default_root_dir=sys.argv[1], auto_resume=True, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Slow(), data)
    print("DONE", trainer.global_step, flush=True)
    """
)


@pytest.mark.timeout(120)
def test_sigterm_from_outside_exits_with_the_preempted_status_and_relaunch_resumes(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    deadline = time.monotonic() + 60
    for line in child.stdout:
        if "READY" in line or time.monotonic() > deadline:
            break
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == ember.EXIT_PREEMPTED, out
    assert (tmp_path / "checkpoints" / "resume.ckpt").exists()
    step = torch.load(tmp_path / "checkpoints" / "resume.ckpt", weights_only=True)["global_step"]
    assert 3 <= step < 32

    relaunch = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert relaunch.returncode == 0, relaunch.stderr
    assert f"START {step}" in relaunch.stdout, "the relaunch continues from the preemption checkpoint"
    assert "DONE 32" in relaunch.stdout
    assert not (tmp_path / "checkpoints" / "resume.ckpt").exists()


def test_under_slurm_rank_zero_requeues_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``scontrol`` (a real executable on the PATH) records how it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls.txt"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    trainer = _trainer(tmp_path, _SignalAt(step=3))
    with pytest.raises(ember.Preempted):
        trainer.fit(_Net(), _loader())
    assert calls.read_text().split() == ["requeue", "4242"]

    calls.unlink()
    with pytest.raises(ember.Preempted):
        _trainer(tmp_path, _SignalAt(step=3), FaultTolerance(requeue=False)).fit(_Net(), _loader())
    assert not calls.exists(), "requeue=False leaves the job alone"
