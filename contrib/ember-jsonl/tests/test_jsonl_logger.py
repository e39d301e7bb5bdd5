"""JSONLinesLogger on real fits: what the module logged is what the file holds,
and a resumed fit continues the same file without repeating a step."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from _jsonl_testing import Recording, Regressor, loaders, trainer
from ember_jsonl import JSONLinesLogger, read_run

import ember


def pairs(records) -> list[tuple[int, dict]]:
    return [(r["step"], r["metrics"]) for r in records]


def test_fit_writes_exactly_what_was_logged(tmp_path: Path) -> None:
    ember.seed_everything(0)
    jsonl, recording = JSONLinesLogger(save_dir=tmp_path, flush_every=7), Recording()
    t = trainer(tmp_path, [jsonl, recording], max_epochs=3)
    module = Regressor(lr=0.03)
    t.fit(module, *loaders())
    assert Path(jsonl.log_dir) == tmp_path / "ember_logs" / "version_0"
    assert t.log_dir == jsonl.log_dir
    records = read_run(jsonl.log_dir)
    assert records == read_run(Path(jsonl.log_dir) / "metrics.jsonl")
    # 6 steps per epoch, each logged, plus one validation and one train epoch-end record per epoch
    assert len(recording.records) == 3 * (6 + 2)
    assert pairs(records) == recording.records  # same steps, names and values (floats round-trip exactly)
    assert all(set(r) == {"step", "metrics", "time"} for r in records)
    times = [r["time"] for r in records]
    assert times == sorted(times) and all(isinstance(x, float) for x in times)
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[-1] == t.global_step == 18
    assert {"train_loss_step", "epoch"} <= set(records[0]["metrics"])
    assert any({"val_loss", "val_mae"} <= set(r["metrics"]) for r in records)
    # hyperparameters
    hparams = json.loads((Path(jsonl.log_dir) / "hparams.json").read_text())
    assert hparams == recording.hparams == {"lr": 0.03, "width": 8}


def test_each_logger_gets_the_next_version(tmp_path: Path) -> None:
    for expected in range(2):
        ember.seed_everything(0)
        logger = JSONLinesLogger(save_dir=tmp_path, name="exp")
        trainer(tmp_path, [logger], max_epochs=1).fit(Regressor(), *loaders())
        assert logger.version == expected
        assert (tmp_path / "exp" / f"version_{expected}" / "metrics.jsonl").is_file()
    assert JSONLinesLogger(save_dir=tmp_path, name="exp", version="named").log_dir == str(tmp_path / "exp" / "named")


def test_records_are_buffered_flush_every(tmp_path: Path) -> None:
    logger = JSONLinesLogger(save_dir=tmp_path, flush_every=3)
    for step in range(5):
        logger.log_metrics({"a": float(step)}, step)
    assert [r["step"] for r in read_run(logger.log_dir)] == [0, 1, 2]
    logger.finalize("success")
    assert [r["metrics"]["a"] for r in read_run(logger.log_dir)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_values_json_cannot_hold_natively(tmp_path: Path) -> None:
    logger = JSONLinesLogger(save_dir=tmp_path)
    logger.log_metrics({"nan": float("nan"), "inf": float("inf"), "flag": True, "n": 3}, 1)
    logger.save()
    (record,) = read_run(logger.log_dir)
    assert math.isnan(record["metrics"]["nan"]) and record["metrics"]["inf"] == math.inf
    assert record["metrics"]["flag"] == 1 and record["metrics"]["n"] == 3


def test_read_run_tolerates_a_cut_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "metrics": {"a": 1.0}, "time": 1.0}\n{"step": 2, "metr')
    assert pairs(read_run(path)) == [(1, {"a": 1.0})]
    path.write_text('{"step": 1, "metr\n{"step": 2, "metrics": {"a": 1.0}, "time": 1.0}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:1"):
        read_run(path)


def test_bad_flush_every() -> None:
    with pytest.raises(ValueError):
        JSONLinesLogger(flush_every=0)


# --------------------------------------------------------------------------- resuming


class SaveAt(ember.Callback):
    """Writes a checkpoint after optimizer step ``step`` (from on_train_batch_end),
    or at the end of the validation at that step with ``at_validation_end``."""

    def __init__(self, step: int, path: Path, at_validation_end: bool = False) -> None:
        self.step, self.path, self.at_validation_end = step, path, at_validation_end

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not self.at_validation_end and trainer.global_step == self.step and not self.path.exists():
            trainer.save_checkpoint(self.path)

    def on_validation_end(self, trainer, module):
        if self.at_validation_end and trainer.global_step == self.step and not self.path.exists():
            trainer.save_checkpoint(self.path)


class CrashAt(ember.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _fit(root: Path, callbacks=(), ckpt_path=None, **logger_kwargs) -> tuple[JSONLinesLogger, Recording]:
    ember.seed_everything(0)
    jsonl, recording = JSONLinesLogger(save_dir=root, **logger_kwargs), Recording()
    trainer(root, [jsonl, recording], callbacks, max_epochs=4).fit(Regressor(), *loaders(), ckpt_path=ckpt_path)
    return jsonl, recording


def _no_repeats(records) -> None:
    seen = Counter((r["step"], frozenset(r["metrics"])) for r in records)
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1]
    steps = [r["step"] for r in records]
    assert steps == sorted(steps)


@pytest.mark.parametrize(
    ("save_at", "at_validation_end", "crash_at"),
    [
        (9, False, 11),  # a checkpoint in the middle of epoch 2, a crash two steps later
        (12, True, 15),  # a checkpoint at the end of epoch 2's validation, a crash in epoch 3
        (12, False, 13),  # a checkpoint after epoch 2's last step, before its validation
    ],
)
def test_resumed_fit_continues_the_same_file(tmp_path: Path, save_at: int, at_validation_end: bool, crash_at: int) -> None:
    reference, _ = _fit(tmp_path / "uninterrupted")
    expected = read_run(reference.log_dir)

    root, path = tmp_path / "resumed", tmp_path / "resume.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(root, [SaveAt(save_at, path, at_validation_end), CrashAt(crash_at)])
    before = read_run(root / "ember_logs" / "version_0")
    assert before[-1]["step"] >= crash_at - 1  # the failed run flushed what it logged

    resumed, recording = _fit(root, ckpt_path=str(path))
    assert resumed.version == 0  # from the checkpoint, not the next free version
    assert not (root / "ember_logs" / "version_1").exists()
    records = read_run(resumed.log_dir)
    _no_repeats(records)
    assert pairs(records) == pairs(expected)  # the same history as the run that never stopped
    assert min(step for step, _ in recording.records) >= save_at  # the resumed run itself began at the checkpoint
    # what the failed run logged after the checkpoint is kept aside, not lost
    after = [r for r in before if r["step"] > save_at]
    superseded_path = Path(resumed.log_dir) / "superseded.jsonl"
    if after:
        assert read_run(superseded_path) == after
    else:
        assert not superseded_path.exists()


def test_resume_from_an_older_checkpoint_rewrites_the_tail(tmp_path: Path) -> None:
    root, path = tmp_path / "run", tmp_path / "early.ckpt"
    first, _ = _fit(root, [SaveAt(6, path)])  # finished all 4 epochs, checkpoint from step 6
    before = read_run(first.log_dir)
    assert before[-1]["step"] == 24
    resumed, _ = _fit(root, ckpt_path=str(path))
    records = read_run(resumed.log_dir)
    _no_repeats(records)
    assert records[-1]["step"] == 24
    assert pairs(records) == pairs(before)  # training replays exactly, so the history is the same
    superseded = read_run(Path(resumed.log_dir) / "superseded.jsonl")
    assert [r["step"] for r in superseded] == [r["step"] for r in before if r["step"] > 6]


def test_a_fresh_run_appending_to_an_existing_version_warns(tmp_path: Path) -> None:
    _fit(tmp_path, version=0)
    with pytest.warns(UserWarning, match="already exists"):
        _fit(tmp_path, version=0)
    steps = [r["step"] for r in read_run(tmp_path / "ember_logs" / "version_0")]
    assert steps.count(24) >= 2  # appended, not replaced


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_a_crafted_checkpoint_does_not_choose_where_the_file_goes(tmp_path: Path, kind: str) -> None:
    """The checkpoint's saved version is matched against this run's own
    directory, never followed as a path (issue 12, item 2)."""
    import torch

    root, path = tmp_path / "run", tmp_path / "resume.ckpt"
    first, _ = _fit(root, [SaveAt(6, path)])
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["callbacks"][first.state_key] == {"version": 0}
    target = tmp_path / "elsewhere"
    checkpoint["callbacks"][first.state_key] = {"version": str(target) if kind == "absolute" else "../../elsewhere"}
    torch.save(checkpoint, path)
    with pytest.warns(UserWarning, match="not a run directory"):
        resumed, _ = _fit(root, ckpt_path=str(path))
    assert not target.exists()
    assert Path(resumed.log_dir) == root / "ember_logs" / "version_1"
    assert read_run(resumed.log_dir)[-1]["step"] == 24
