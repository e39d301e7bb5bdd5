"""WandbLogger, offline only: real fits, read back from the run's ``run-<id>.wandb`` files.

No network and no account: ``WANDB_MODE=offline``, and every directory W&B
writes to is under the test's temporary directory. The ``.wandb`` files are
read directly: a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs
(the ``wandb.sdk.internal.datastore`` reader is gone from recent versions).
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Any

import pytest

pytest.importorskip("wandb", reason="WandbLogger needs wandb (pip install 'ember[wandb]')")

from logger_testkit import (  # noqa: E402
    STEP_KEY,
    LoggedModule,
    Recorder,
    assert_lazy_import,
    assert_same_series,
    check_series_shape,
    run_fit,
)

from ember.plugins.callbacks import ModelCheckpoint  # noqa: E402
from ember.plugins.loggers.wandb import WandbLogger  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def offline_wandb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_DISABLE_CODE": "true",
            "WANDB_DISABLE_GIT": "true",
            "WANDB_CONSOLE": "off",
            "WANDB_ERROR_REPORTING": "false",
            "WANDB_CONFIG_DIR": str(home / "config"),
            "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_DATA_DIR": str(home / "data"),
            "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
        }.items():
            mp.setenv(key, value)
        mp.delenv("WANDB_API_KEY", raising=False)
        yield


# --------------------------------------------------------------------------- reading a run back


def read_records(path: str) -> list[Any]:
    """The protobuf records of one ``.wandb`` file (the conformance suite's reader)."""
    from ember.logger_readback import wandb_records

    return wandb_records(path)


def read_complete(path: str, timeout: float = 8.0) -> list[Any]:
    """The records of a finished run. ``run.finish()`` can return before
    wandb-core has written the file out (seen with W&B 0.31), so wait for the
    exit record."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


class OfflineRun:
    """Everything one run id wrote, across all its run directories, in start order."""

    def __init__(self, save_dir: str, run_id: str, finished: bool = True) -> None:
        files = [f for f in glob.glob(os.path.join(save_dir, "wandb", "offline-run-*", f"run-{run_id}.wandb"))]
        self.segments: list[list[Any]] = []
        for path in files:
            records = read_complete(path) if finished else read_records(path)
            start = next(r.run.start_time.ToNanoseconds() for r in records if r.WhichOneof("record_type") == "run")
            self.segments.append((start, records))  # type: ignore[arg-type]
        self.segments = [records for _, records in sorted(self.segments, key=lambda s: s[0])]  # type: ignore[misc]

    def records(self, kind: str) -> list[Any]:
        return [r for seg in self.segments for r in seg if r.WhichOneof("record_type") == kind]

    def rows(self) -> list[tuple[int, dict[str, float]]]:
        """History rows (step, user metrics), segment after segment."""
        out = []
        for record in self.records("history"):
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out.append((record.history.step.num, {k: v for k, v in items.items() if not k.startswith("_")}))
        return out

    def series(self) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        for step, metrics in self.rows():
            for key, value in metrics.items():
                out.setdefault(key, []).append((step, float(value)))
        return out

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for seg in self.segments:
            for record in seg:
                kind = record.WhichOneof("record_type")
                if kind in ("run", "config"):
                    for item in (record.run.config if kind == "run" else record.config).update:
                        config[item.key] = json.loads(item.value_json)
        config.pop("_wandb", None)
        return config

    def exit_codes(self) -> list[int]:
        return [r.exit.exit_code for r in self.records("exit")]


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_module_import_and_trainer_do_not_import_wandb():
    assert_lazy_import("ember.plugins.loggers.wandb", ("wandb",))


@pytest.mark.slow
def test_nothing_starts_before_the_first_write(tmp_path):
    logger = WandbLogger(project="p", save_dir=tmp_path / "w", offline=True)
    assert logger.version is None and logger._run is None
    assert not os.path.exists(tmp_path / "w"), "no wandb.init before something is logged"
    logger.log_metrics({"a": 1.0}, step=3)
    assert logger.version == logger.experiment.id
    logger.finalize("success")
    run = OfflineRun(str(tmp_path / "w"), logger.version)
    assert run.series() == {"a": [(3, 1.0)]} and run.exit_codes() == [0]


@pytest.mark.parametrize("every", [1, 3])
def test_fit_history_matches_what_was_logged(tmp_path, every):
    recorder = Recorder()
    logger = WandbLogger(project="ember-tests", save_dir=tmp_path, offline=True)
    run_fit(tmp_path, [recorder, logger], epochs=3, every=every)
    run = OfflineRun(str(tmp_path), logger.version)
    expected = recorder.series()
    check_series_shape(expected, epochs=3, every=every)
    steps = [s for s, _ in run.rows()]
    assert steps == sorted(set(steps)), "one history row per step, in order"
    assert_same_series(run.series(), expected)
    assert run.exit_codes() == [0]


@pytest.mark.parametrize(("log_model", "policy"), [(True, "mutable"), ("all", "immutable"), (False, "mutable")])
def test_log_model_logs_checkpoints_as_model_artifacts(tmp_path, log_model, policy):
    logger = WandbLogger(save_dir=tmp_path, offline=True, log_model=log_model, checkpoint_name="ckpts", add_file_policy=policy)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", every_n_epochs=1, save_top_k=1, monitor="epoch", mode="max")
    run_fit(tmp_path, [logger], epochs=3, callbacks=[ckpt], enable_checkpointing=True)
    artifacts = [r.artifact for r in OfflineRun(str(tmp_path), logger.version).records("artifact") if r.artifact.type == "model"]
    filenames = [json.loads(a.metadata)["original_filename"] for a in artifacts]
    assert filenames == {True: ["epoch=2.ckpt"], "all": ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"], False: []}[log_model]
    for artifact in artifacts:
        assert artifact.name == "ckpts" and "latest" in artifact.aliases and "best" in artifact.aliases
        (entry,) = artifact.manifest.contents
        assert entry.path == "model.ckpt"
        original = os.path.join(str(tmp_path / "ckpt"), json.loads(artifact.metadata)["original_filename"])
        assert (entry.local_path == original) == (policy == "immutable")  # mutable: a staged copy
    with pytest.raises(ValueError, match="add_file_policy='copy'"):
        WandbLogger(save_dir=tmp_path, offline=True, add_file_policy="copy")


def test_hyperparameters_go_to_the_run_config(tmp_path):
    logger = WandbLogger(save_dir=tmp_path, offline=True, config={"seed": 7})
    run_fit(tmp_path, [logger], epochs=1, module=LoggedModule(lr=0.02, note="hi", opt={"beta": 0.9}))
    config = OfflineRun(str(tmp_path), logger.version).config()
    assert config == {"seed": 7, "lr": 0.02, "width": 4, "note": "hi", "opt": {"beta": 0.9}}


def test_resume_continues_the_same_run_id_and_steps(tmp_path):
    reference = Recorder()
    run_fit(tmp_path / "ref", [reference], epochs=4)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    first = WandbLogger(project="p", save_dir=tmp_path, offline=True)
    run_fit(tmp_path, [first], epochs=2, callbacks=[ckpt], enable_checkpointing=True)
    resumed = WandbLogger(project="p", save_dir=tmp_path, offline=True)
    run_fit(tmp_path, [resumed], epochs=4, ckpt_path=ckpt.last_model_path)
    assert resumed.version == first.version

    run = OfflineRun(str(tmp_path), first.version)
    assert len(run.segments) == 2, "offline, a resumed run is a second directory of the same id"
    assert [r.run.resume for r in run.records("run")] == [False, True], "the second init asked to resume"
    steps = [s for s, _ in run.rows()]
    assert steps == sorted(set(steps)), f"the resumed run goes on after the checkpoint's step: {steps}"
    assert_same_series(run.series(), reference.series(), rel=1e-5)
    assert run.exit_codes() == [0, 0]


def test_failed_fit_finishes_the_run_with_an_error_code(tmp_path):
    class Boom(LoggedModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.global_step == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    logger = WandbLogger(save_dir=tmp_path, offline=True)
    with pytest.raises(RuntimeError, match="boom"):
        run_fit(tmp_path, [logger], epochs=1, module=Boom())
    run = OfflineRun(str(tmp_path), logger.version)
    assert [s for s, _ in run.series()[STEP_KEY]] == [1, 2]
    assert run.exit_codes() == [1]


def test_lower_step_is_dropped_with_a_warning(tmp_path):
    logger = WandbLogger(save_dir=tmp_path, offline=True)
    logger.log_metrics({"a": 1.0}, step=5)
    with pytest.warns(UserWarning, match="lower than the last"):
        logger.log_metrics({"a": 2.0}, step=4)
    logger.finalize("success")
    assert OfflineRun(str(tmp_path), logger.version).series() == {"a": [(5, 1.0)]}


def test_registered_by_name(tmp_path):
    import ember

    trainer = ember.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    logger = trainer._registry.create("logger", "wandb", save_dir=tmp_path, offline=True)
    assert isinstance(logger, WandbLogger)
