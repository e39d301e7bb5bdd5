"""The digits example trains through the ``ember`` command to >= 97 % validation
accuracy, logs to CSV and writes a checkpoint that loads with
``torch.load(weights_only=True)``.

It runs the real thing (``ember fit`` in a subprocess, on a copy of
``examples/digits``) and takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn", reason="the digits example needs scikit-learn (pip install -e '.[examples]')")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits"
TARGET_ACC = 0.97


def ember_command() -> list[str]:
    """The ``ember`` console script of the running interpreter's environment."""
    scripts = Path(sys.executable).parent
    for name in ("ember", "ember.exe"):
        if (scripts / name).exists():
            return [str(scripts / name)]
    found = shutil.which("ember")
    if found is None:
        pytest.fail("the `ember` command is not installed; run `python -m pip install -e .`")
    return [found]


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_digits_fit_through_the_cli(tmp_path: Path) -> None:
    workdir = tmp_path / "digits"
    shutil.copytree(EXAMPLE, workdir, ignore=shutil.ignore_patterns("__pycache__", "ember_logs", "checkpoints", "*.ckpt"))
    run_root = tmp_path / "run"
    env = dict(os.environ)
    # Only ember's built-in plugins: whatever else is installed in the test
    # environment must not change this run.
    env["EMBER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.pop("EMBER_PLUGINS", None)
    env.pop("EMBER_DISABLE_PLUGINS", None)
    env = {k: v for k, v in env.items() if not (k.startswith("EMBER_") and "__" in k)}  # no stray stack overrides

    start = time.perf_counter()
    proc = subprocess.run(
        [
            *ember_command(), "fit", "--trainer.default_root_dir", str(run_root),
            "--loggers.0.init_args.save_dir", str(run_root),  # the stack's explicit CSV logger
            "--trainer.enable_progress_bar", "false",
        ],  # fmt: skip
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    elapsed = time.perf_counter() - start
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, f"`ember fit` exited with {proc.returncode}\n{output}"
    # The CLI prints the final metrics.
    assert "val_acc" in proc.stdout, output

    metrics_csv = run_root / "ember_logs" / "version_0" / "metrics.csv"
    assert metrics_csv.is_file(), f"no {metrics_csv}\n{output}"
    rows = read_metrics(metrics_csv)
    assert rows and "step" in rows[0], f"{metrics_csv} has no step column"
    val_acc = [float(r["val_acc"]) for r in rows if r.get("val_acc") not in (None, "")]
    assert val_acc, f"{metrics_csv} has no val_acc values"
    assert max(val_acc) >= TARGET_ACC, f"best val_acc {max(val_acc):.4f} < {TARGET_ACC} (all: {val_acc})"
    assert val_acc[-1] >= TARGET_ACC - 0.02, f"final val_acc {val_acc[-1]:.4f} fell far below the best (all: {val_acc})"
    assert any(r.get("train_loss") not in (None, "") for r in rows), "train_loss was never logged"

    checkpoints = sorted(run_root.rglob("*.ckpt"))
    assert checkpoints, f"no checkpoint under {run_root}\n{output}"
    for path in checkpoints:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt["state_dict"]
        assert any(key.endswith("features.0.weight") for key in state), sorted(state)[:5]

    print(f"ember fit took {elapsed:.1f} s; best val_acc {max(val_acc):.4f}, final {val_acc[-1]:.4f}")
