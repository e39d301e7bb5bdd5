"""MLflowLogger: real fits into a local SQLite store (and a file store), read
back with ``MlflowClient.get_metric_history``."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

pytest.importorskip("mlflow", reason="MLflowLogger needs mlflow-skinny (pip install 'ember[mlflow]')")

from logger_testkit import (  # noqa: E402
    LoggedModule,
    Recorder,
    assert_lazy_import,
    assert_same_series,
    check_series_shape,
    run_fit,
)

from ember.plugins.callbacks import ModelCheckpoint  # noqa: E402
from ember.plugins.loggers.mlflow import MLflowLogger  # noqa: E402


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty, migrated MLflow SQLite database. Creating one runs MLflow's
    schema migrations (seconds); the tests copy this one instead."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    path = str(tmp_path_factory.mktemp("mlflow_template") / "mlflow.db")
    MlflowClient(tracking_uri="sqlite:///" + path).search_experiments()
    return path


@pytest.fixture
def db(template_db: str, tmp_path: Any) -> Any:
    """``db(directory)`` puts a fresh database at ``{directory}/mlflow.db``,
    where an MLflowLogger(save_dir=directory) looks for it."""

    def place(directory: Any = tmp_path) -> None:
        os.makedirs(directory, exist_ok=True)
        shutil.copyfile(template_db, os.path.join(directory, "mlflow.db"))

    return place


def history(logger: MLflowLogger) -> dict[str, list[tuple[int, float]]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=logger.tracking_uri)
    run = client.get_run(logger.version)
    out = {}
    for key in run.data.metrics:
        points = sorted(client.get_metric_history(logger.version, key), key=lambda m: (m.step, m.timestamp))
        out[key] = [(m.step, m.value) for m in points]
    return out


def run_info(logger: MLflowLogger) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=logger.tracking_uri).get_run(logger.version)


@pytest.mark.slow
def test_module_import_and_trainer_do_not_import_mlflow():
    assert_lazy_import("ember.plugins.loggers.mlflow", ("mlflow",))


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 3])
def test_fit_metrics_match_what_was_logged(db, tmp_path, every, monkeypatch):
    cwd = tmp_path.parent / f"{tmp_path.name}_cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    recorder = Recorder()
    logger = MLflowLogger(save_dir=tmp_path, run_name="first", tags={"team": "ember"})
    assert logger.version is None and not os.listdir(tmp_path), "nothing happens before the first write"
    db()
    run_fit(tmp_path, [recorder, logger], epochs=3, every=every)
    assert logger.tracking_uri == "sqlite:///" + str(tmp_path / "mlflow.db")
    expected = recorder.series()
    check_series_shape(expected, epochs=3, every=every)
    assert_same_series(history(logger), expected)
    run = run_info(logger)
    assert run.info.status == "FINISHED" and run.info.run_name == "first" and run.data.tags["team"] == "ember"
    assert os.listdir(cwd) == [], "nothing is written to the working directory"


def test_params_flattened_as_text(db, tmp_path):
    db()
    logger = MLflowLogger(save_dir=tmp_path)
    run_fit(tmp_path, [logger], epochs=1, module=LoggedModule(lr=0.02, note="hi", opt={"beta": 0.9, "kind": None}))
    params = run_info(logger).data.params
    assert params == {"lr": "0.02", "width": "4", "note": "hi", "opt/beta": "0.9", "opt/kind": "None"}


def test_changed_param_keeps_first_value_with_a_warning(db, tmp_path):
    db()
    logger = MLflowLogger(save_dir=tmp_path)
    logger.log_hyperparams({"lr": 0.1, "bs": 8})
    logger.log_hyperparams({"lr": 0.1, "bs": 8})  # the same again: fine
    with pytest.warns(UserWarning, match="bs"):
        logger.log_hyperparams({"bs": 16, "new": 1})
    logger.finalize("success")
    assert run_info(logger).data.params == {"lr": "0.1", "bs": "8", "new": "1"}


def test_resume_continues_the_same_run_and_steps(db, tmp_path):
    reference = Recorder()
    run_fit(tmp_path / "ref", [reference], epochs=4)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    db()
    first = MLflowLogger(save_dir=tmp_path)
    run_fit(tmp_path, [first], epochs=2, callbacks=[ckpt], enable_checkpointing=True)
    resumed = MLflowLogger(save_dir=tmp_path)
    run_fit(tmp_path, [resumed], epochs=4, ckpt_path=ckpt.last_model_path)
    assert resumed.version == first.version
    assert_same_series(history(resumed), reference.series(), rel=1e-5)
    assert run_info(resumed).info.status == "FINISHED"


def test_failed_fit_marks_the_run_failed(db, tmp_path):
    class Boom(LoggedModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.global_step == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    db()
    logger = MLflowLogger(save_dir=tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        run_fit(tmp_path, [logger], epochs=1, module=Boom())
    assert run_info(logger).info.status == "FAILED"
    assert [s for s, _ in history(logger)["train_loss"]] == [1, 2], "buffered metrics are written when the run ends"


def test_buffering_and_key_sanitising(db, tmp_path):
    db()
    logger = MLflowLogger(save_dir=tmp_path, flush_logs_every_n_steps=3, flush_secs=3600)
    for step in range(2):
        logger.log_metrics({"acc@1": float(step)}, step)
    assert logger.version is None, "two calls stay in memory"
    logger.log_metrics({"acc@1": 2.0, "epoch": 0}, 2)
    logger.log_metrics({"epoch": 0}, 2)  # a repeat at the same step is dropped
    logger.finalize("success")
    assert history(logger) == {"acc_1": [(0, 0.0), (1, 1.0), (2, 2.0)], "epoch": [(2, 0.0)]}


@pytest.mark.parametrize("synchronous", [False, True])
def test_synchronous_and_artifact_location(db, tmp_path, synchronous):
    db()
    artifacts = (tmp_path / "elsewhere").resolve().as_uri()
    logger = MLflowLogger(save_dir=tmp_path, experiment_name="arts", artifact_location=artifacts, synchronous=synchronous)
    recorder = Recorder()
    run_fit(tmp_path, [recorder, logger], epochs=1)
    assert logger._in_flight == []  # asynchronous writes were awaited at the end of the run
    assert_same_series(history(logger), recorder.series())
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri=logger.tracking_uri).get_experiment_by_name("arts")
    assert experiment.artifact_location == artifacts
    logger.log_metrics({"late": 1.0}, 99)
    logger.save()
    assert len(logger._in_flight) == (0 if synchronous else 1)  # an asynchronous write is in flight until waited for
    logger.wait()
    assert history(logger)["late"] == [(99, 1.0)]


def _artifacts(logger: MLflowLogger) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=logger.tracking_uri)
    return sorted(os.path.basename(f.path) for f in client.list_artifacts(logger.version, "checkpoints"))


@pytest.mark.parametrize("log_model", [True, "all", False])
def test_log_model_uploads_checkpoints(db, tmp_path, log_model):
    db()
    logger = MLflowLogger(save_dir=tmp_path, log_model=log_model)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", every_n_epochs=1, save_top_k=1, monitor="epoch", mode="max")
    run_fit(tmp_path, [logger], epochs=3, callbacks=[ckpt], enable_checkpointing=True)
    kept = sorted(f for f in os.listdir(tmp_path / "ckpt") if f.endswith(".ckpt"))  # (and ModelCheckpoint's record)
    assert kept == ["epoch=2.ckpt"]  # top-1 replaced the earlier ones
    expected = {True: kept, "all": ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"], False: []}[log_model]
    assert _artifacts(logger) == expected
    if log_model:
        from mlflow import MlflowClient

        local = MlflowClient(tracking_uri=logger.tracking_uri).download_artifacts(logger.version, "checkpoints/epoch=2.ckpt", str(tmp_path / "dl"))
        with open(local, "rb") as got, open(tmp_path / "ckpt" / "epoch=2.ckpt", "rb") as written:
            assert got.read() == written.read()


def test_save_dir_defaults_to_mlruns(db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db(tmp_path / "mlruns")
    logger = MLflowLogger()
    assert logger.save_dir == "./mlruns"
    logger.log_metrics({"x": 1.0}, 0)
    logger.finalize("success")
    assert logger.tracking_uri == "sqlite:///" + str(tmp_path / "mlruns" / "mlflow.db")
    assert history(logger) == {"x": [(0, 1.0)]}


def test_file_store_with_an_explicit_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLflowLogger(tracking_uri=str(tmp_path / "mlruns"), experiment_name="files")
    recorder = Recorder()
    run_fit(tmp_path, [recorder, logger], epochs=1)
    assert_same_series(history(logger), recorder.series())
    assert os.path.isdir(tmp_path / "mlruns" / run_info(logger).info.experiment_id / logger.version)


def test_registered_by_name(tmp_path):
    import ember

    trainer = ember.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    logger = trainer._registry.create("logger", "mlflow", save_dir=tmp_path)
    assert isinstance(logger, MLflowLogger)


class NoHparams(LoggedModule):
    """No ``save_hyperparameters()``: nothing creates the run before ``finalize``."""

    def __init__(self) -> None:
        import torch

        super(LoggedModule, self).__init__()  # skips LoggedModule's save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def configure_optimizers(self) -> Any:
        import torch

        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_short_run_without_hyperparameters_keeps_every_metric(db, tmp_path):
    # Regression (issue 16): finalize() returned early when no client existed yet,
    # dropping the buffer: a short run without hyperparameters stored nothing.
    db()
    recorder = Recorder()
    logger = MLflowLogger(save_dir=tmp_path)  # 100 calls / 5 s buffer: a 2-epoch run never flushes before the end
    run_fit(tmp_path, [recorder, logger], epochs=2, module=NoHparams())
    assert len(recorder.series()["train_loss"]) == 8
    assert_same_series(history(logger), recorder.series())
    assert run_info(logger).info.status == "FINISHED"
