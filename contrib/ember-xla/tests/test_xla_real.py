"""Real XLA runs on the XLA CPU client (``PJRT_DEVICE=CPU``), compared with
ember's own CPU training. They run only where torch_xla imports: each torch_xla
release is built for one torch release, so next to any other torch it does not.

Every job runs in a subprocess (``xla_job.py``) so that it gets a fresh XLA
runtime with its own PJRT settings.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("torch_xla", reason="torch_xla is not installable for the installed torch version", exc_type=ImportError)

JOB = os.path.join(os.path.dirname(__file__), "xla_job.py")


def run_job(out_dir, env: dict[str, str], *args: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    proc = subprocess.run([sys.executable, JOB, str(out_dir), *args], env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return torch.load(os.path.join(out_dir, "result.pt"), weights_only=False)


@pytest.fixture(scope="module")
def cpu_reference(tmp_path_factory) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBER_", "PJRT_", "XLA_"))}
    return run_job(tmp_path_factory.mktemp("cpu"), env, "--accelerator", "cpu", "--strategy", "auto")


@pytest.fixture
def xla_cpu_env(clean_env) -> dict[str, str]:
    return {**clean_env, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "1"}


def assert_same_training(result: dict, reference: dict) -> None:
    assert result["global_step"] == reference["global_step"] == 8
    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(result["state_dict"][name], value, rtol=1e-4, atol=1e-5)
    for name in ("train_loss", "val_loss"):
        assert result["metrics"][name] == pytest.approx(reference["metrics"][name], rel=1e-4)


def test_xla_single_device_trains_like_the_cpu(tmp_path, xla_cpu_env, cpu_reference):
    result = run_job(tmp_path, xla_cpu_env, "--accelerator", "xla", "--strategy", "xla", "--checkpoint")
    assert (result["accelerator"], result["strategy"]) == ("XLAAccelerator", "xla")
    assert_same_training(result, cpu_reference)
    observed = torch.load(tmp_path / "observed.pt", weights_only=False)
    assert observed["seen_devices"] == ["xla"] and observed["root_device"].startswith("xla")
    assert observed["world_size"] == 1 and observed["summed"].item() == 1.0 and observed["broadcast"] == {"from": 0}
    checkpoint = torch.load(tmp_path / "final.ckpt", weights_only=True)  # plain CPU tensors, no torch_xla needed to read
    assert all(t.device.type == "cpu" for t in checkpoint["state_dict"].values())
    for name, value in result["state_dict"].items():
        torch.testing.assert_close(checkpoint["state_dict"][name], value)


def test_xla_ddp_one_replica_through_the_launcher(tmp_path, xla_cpu_env, cpu_reference):
    # One replica: the CPU client here cannot run two (see docs/strategies/xla.md),
    # but this still goes through torch_xla.launch and ships rank zero's results back.
    result = run_job(tmp_path, xla_cpu_env, "--accelerator", "xla", "--strategy", "xla_ddp", "--devices", "1")
    assert result["strategy"] == "xla_ddp"
    assert_same_training(result, cpu_reference)
    observed = torch.load(tmp_path / "observed.pt", weights_only=False)
    assert observed["world_size"] == 1 and observed["seen_devices"] == ["xla"]


def test_xla_bf16_trains(tmp_path, xla_cpu_env):
    result = run_job(tmp_path, xla_cpu_env, "--accelerator", "xla", "--strategy", "xla", "--precision", "xla-bf16")
    assert all(v.dtype == torch.bfloat16 for v in result["state_dict"].values())
    assert torch.isfinite(torch.tensor(result["metrics"]["train_loss"]))


def test_auto_picks_xla_when_the_user_chose_a_pjrt_device(tmp_path, xla_cpu_env):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ember; t = ember.Trainer(accelerator='auto', strategy='xla', logger=False); print(t.strategy.accelerator.name)",
        ],
        env=xla_cpu_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "xla"
