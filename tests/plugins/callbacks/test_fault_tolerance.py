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
from ember.testing import TinyModule, quiet_trainer


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
    return quiet_trainer(root, callbacks=list(callbacks), **{"max_epochs": 3, "enable_fault_tolerance": None, **kwargs})


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


class _Validated(_Net):
    """Validation draws random numbers too, so a resume that replays a
    validation from another random state trains differently afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.val_calls = 0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.val_calls += 1
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layers(x), y) + 0 * torch.rand(()))


class _SignalInValidation(ember.Callback):
    """SIGTERM at the start of validation batch ``batch`` of the validation
    that runs at ``epoch`` (or of the sanity check)."""

    def __init__(self, epoch: int, batch: int, sanity: bool = False) -> None:
        self.epoch, self.batch, self.sanity = epoch, batch, sanity
        self.calls_at_signal = -1
        self.sent_at = 0.0

    def on_validation_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking == self.sanity and trainer.current_epoch == self.epoch and batch_idx == self.batch and self.sent_at == 0:
            self.calls_at_signal = module.val_calls
            self.sent_at = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)


def _val_loader(n: int = 200) -> DataLoader:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


@pytest.mark.parametrize("sanity", [False, True], ids=["validation", "sanity_check"])
def test_sigterm_during_validation_saves_within_one_batch_and_resumes_exactly(tmp_path: Path, sanity: bool) -> None:
    kwargs: dict[str, Any] = {"num_sanity_val_steps": 30 if sanity else 0}
    ember.seed_everything(5)
    reference = _Validated()
    _trainer(tmp_path / "ref", **kwargs).fit(reference, _loader(), _val_loader())

    ember.seed_everything(5)
    model = _Validated()
    signaller = _SignalInValidation(epoch=0 if sanity else 1, batch=7, sanity=sanity)
    trainer = _trainer(tmp_path, signaller, **kwargs)
    with pytest.raises(ember.Preempted):
        trainer.fit(model, _loader(), _val_loader())
    delay = time.monotonic() - signaller.sent_at
    # The batch in progress when the signal came finishes; no other one starts (50 were left).
    assert model.val_calls - signaller.calls_at_signal == 1, (model.val_calls, signaller.calls_at_signal)
    saved = torch.load(trainer.resume_checkpoint_path, weights_only=True)
    assert saved["global_step"] == (0 if sanity else 20)
    print(f"\nSIGTERM in {'the sanity check' if sanity else 'validation'}: saved and exited {delay * 1000:.0f} ms later")

    ember.seed_everything(99)
    resumed = _Validated()
    again = _trainer(tmp_path, auto_resume=True, **kwargs)
    again.fit(resumed, _loader(), _val_loader())
    assert again.global_step == 30
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_unwritable_default_root_dir_fails_before_the_first_step(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    model = _Net()
    before = [p.detach().clone() for p in model.parameters()]
    for checkpointing in (False, True):
        trainer = ember.Trainer(
            max_epochs=1, default_root_dir=blocker / "run", logger=False, enable_checkpointing=checkpointing, enable_progress_bar=False
        )
        with pytest.raises(OSError, match=r"cannot write checkpoints to .*a-file.*is not a directory.*default_root_dir") as info:
            trainer.fit(model, _loader())
        assert trainer.global_step == 0 and "\n" not in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


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


@pytest.mark.slow
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


def test_a_failing_teardown_elsewhere_still_restores_the_signal_handlers(tmp_path: Any) -> None:
    class FailingTeardown(ember.Callback):
        def teardown(self, trainer: Any, module: Any, stage: str) -> None:
            raise OSError("teardown failed")

    before = signal.getsignal(signal.SIGTERM)
    trainer = ember.Trainer(
        max_epochs=1,
        callbacks=[FailingTeardown()],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    assert any(isinstance(cb, FaultTolerance) for cb in trainer.callbacks)
    with pytest.raises(OSError, match="teardown failed"):
        trainer.fit(TinyModule())  # TinyModule brings its own loaders
    assert signal.getsignal(signal.SIGTERM) is before, "FaultTolerance's teardown ran after the other one raised"
