"""Version directories (issue 12, items 2 and 7): a checkpoint never decides
where a resumed logger writes, and concurrent runs never share a version."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch
from logger_testkit import Recorder, run_fit

from ember.plugins.callbacks import ModelCheckpoint
from ember.plugins.loggers import CSVLogger
from ember.plugins.loggers.versions import claim_version, version_from_checkpoint


def test_claim_version_takes_the_next_free_number_and_skips_taken_ones(tmp_path):
    root = str(tmp_path / "exp")
    assert [claim_version(root), claim_version(root)] == [0, 1]
    os.mkdir(os.path.join(root, "version_5"))
    assert claim_version(root) == 6
    assert sorted(os.listdir(root)) == ["version_0", "version_1", "version_5", "version_6"]


def test_two_loggers_in_one_process_get_two_directories(tmp_path):
    a, b = CSVLogger(save_dir=tmp_path), CSVLogger(save_dir=tmp_path)
    assert (a.version, b.version) == (0, 1)


@pytest.mark.parametrize("saved", ["/abs/elsewhere", "../escape", "version_0/../../x", "", -1, 3.5, True])
def test_unusable_saved_versions_are_ignored_with_a_warning(tmp_path, saved):
    os.mkdir(tmp_path / "version_0")
    with pytest.warns(UserWarning, match="not a run directory"):
        assert version_from_checkpoint("CSVLogger", str(tmp_path), None, saved) is None


def test_saved_version_is_matched_inside_the_configured_root(tmp_path):
    os.mkdir(tmp_path / "version_2")
    os.mkdir(tmp_path / "named")
    assert version_from_checkpoint("CSVLogger", str(tmp_path), None, 2) == 2
    assert version_from_checkpoint("CSVLogger", str(tmp_path), None, "named") == "named"
    with pytest.warns(UserWarning, match="differs from the configured version=7"):
        assert version_from_checkpoint("CSVLogger", str(tmp_path), 7, 2) is None


def _checkpoint_with_logger_version(tmp_path: Any, version: Any, cls: type = CSVLogger) -> tuple[str, str]:
    """A real checkpoint of a fit logged by ``cls``, with the logger's saved version replaced."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    first = cls(save_dir=tmp_path / "logs")
    run_fit(tmp_path, [first], epochs=1, callbacks=[ckpt], enable_checkpointing=True)
    checkpoint = torch.load(ckpt.last_model_path, weights_only=True)
    assert checkpoint["callbacks"][first.state_key] == {"version": 0}
    checkpoint["callbacks"][first.state_key] = {"version": version}
    crafted = str(tmp_path / "crafted.ckpt")
    torch.save(checkpoint, crafted)
    return crafted, first.state_key


def _tensorboard() -> type:
    pytest.importorskip("tensorboard")
    from ember.plugins.loggers.tensorboard import TensorBoardLogger

    return TensorBoardLogger


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_crafted_checkpoint_version_does_not_choose_the_directory(tmp_path, kind, logger):
    cls = CSVLogger if logger == "csv" else _tensorboard()
    target = tmp_path / "elsewhere"
    version = str(target) if kind == "absolute" else os.path.join("..", "..", "elsewhere")
    crafted, _ = _checkpoint_with_logger_version(tmp_path, version, cls)
    resumed = cls(save_dir=tmp_path / "logs")
    with pytest.warns(UserWarning, match="not a run directory"):
        run_fit(tmp_path, [resumed], epochs=2, ckpt_path=crafted)
    assert not target.exists(), "nothing is written where the checkpoint pointed"
    assert resumed.log_dir == os.path.join(str(tmp_path / "logs"), "ember_logs", "version_1")
    assert os.listdir(resumed.log_dir), "the resumed run writes into its own new version"


def test_resume_continues_the_matching_version_in_the_configured_root(tmp_path):
    crafted, _ = _checkpoint_with_logger_version(tmp_path, 0)  # the real saved value
    resumed = CSVLogger(save_dir=tmp_path / "logs")
    assert resumed.version == 1  # claimed before the restore (as trainer.log_dir would): given back when the checkpoint matches
    run_fit(tmp_path, [resumed, Recorder()], epochs=2, ckpt_path=crafted)
    assert resumed.version == 0
    assert sorted(os.listdir(tmp_path / "logs" / "ember_logs")) == ["version_0"], "the empty claimed directory is removed"


_CLAIMER = textwrap.dedent(
    """
    import sys, time
    from ember.plugins.loggers import CSVLogger
    root, go = sys.argv[1], float(sys.argv[2])
    while time.time() < go:
        pass
    loggers = [CSVLogger(save_dir=root) for _ in range(20)]
    print(" ".join(str(lg.version) for lg in loggers))
    """
)


@pytest.mark.slow
def test_two_concurrent_processes_never_share_a_version(tmp_path):
    """Two real processes claim 20 versions each in one directory, starting at
    the same instant: every version goes to exactly one logger."""
    import time

    go = time.time() + 3.0
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, str(tmp_path), str(go)], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    versions = [int(v) for out in outs for v in out.split()]
    assert sorted(versions) == list(range(40)), versions


_FIT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from logger_testkit import run_fit
    from ember.plugins.loggers import CSVLogger
    logger = CSVLogger(save_dir=sys.argv[1])
    run_fit(sys.argv[1], [logger], epochs=2)
    print(logger.version)
    """
)


@pytest.mark.slow
def test_two_concurrent_fits_with_one_root_write_two_versions(tmp_path):
    here = os.path.dirname(__file__)
    procs = [subprocess.Popen([sys.executable, "-c", _FIT, str(tmp_path), here], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs) == ["0", "1"]
    for version in outs:
        with open(tmp_path / "ember_logs" / f"version_{version}" / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["step"]) for r in rows if r["train_loss"]] == list(range(1, 9)), "each run's file holds its own 8 steps once"
