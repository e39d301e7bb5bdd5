"""The logger conformance suite (ember.testing.LoggerConformance) against every
built-in logger: real fits, read back from each library's own store."""

from __future__ import annotations

import pytest

from ember.logger_readback import BUILTIN_SPECS
from ember.testing import LoggerConformance


class TestCSVLogger(LoggerConformance):
    spec = BUILTIN_SPECS["csv"]


class TestTensorBoardLogger(LoggerConformance):
    spec = BUILTIN_SPECS["tensorboard"]


class TestMLflowLogger(LoggerConformance):
    spec = BUILTIN_SPECS["mlflow"]


class TestWandbLogger(LoggerConformance):
    spec = BUILTIN_SPECS["wandb"]


def test_a_step_ended_by_a_batch_end_hook_still_reaches_the_loggers(tmp_path):
    """Preemption saves and raises in on_train_batch_end; the step it ends was
    completed, and a resumed run starts after it, so its metrics must be logged
    (they were lost before: logging came after the batch-end hooks)."""
    from ember.callback import Callback
    from ember.logger_conformance import _module_class, _recorder, loader, make_trainer

    class StopAt(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                raise RuntimeError("a batch-end hook ends the run")

    recorder = _recorder()
    trainer = make_trainer(str(tmp_path), [recorder], callbacks=[StopAt()])
    with pytest.raises(RuntimeError, match="ends the run"):
        trainer.fit(_module_class()(), loader(4, 0))
    assert [s for s, _ in recorder.series()["train_loss"]] == [1, 2, 3]


@pytest.mark.slow  # a fresh MLflow database and W&B's service start: over 10 s on a loaded machine
def test_every_builtin_logger_at_once_holds_every_step(tmp_path, monkeypatch):
    """The issue's probe: one fit without save_hyperparameters() into CSV,
    TensorBoard, MLflow and W&B (offline) at once; each store holds all of it."""
    from ember.logger_conformance import _module_class, _recorder, assert_stored, collapse, loader, make_trainer
    from ember.logger_readback import BUILTIN_SPECS

    specs = [BUILTIN_SPECS[name] for name in ("csv", "tensorboard", "mlflow", "wandb")]
    for spec in specs:
        for key, value in spec.env.items():
            monkeypatch.setenv(key, value)
    loggers = [spec.build(str(tmp_path / spec.name)) for spec in specs]
    recorder = _recorder()
    make_trainer(str(tmp_path), [*loggers, recorder]).fit(_module_class()(), loader(4, 0), loader(2, 1))
    assert len(recorder.series()["train_loss"]) == 8
    for spec, logger in zip(specs, loggers, strict=True):
        stored = spec.read_back(spec.handle(logger, str(tmp_path / spec.name)))
        assert_stored(collapse(stored.series), recorder.series(), spec.name)


def test_a_logger_whose_finalize_raises_does_not_cost_the_others_their_data(tmp_path):
    """finalize() is where buffered loggers write: one raising must not skip the
    loggers after it (the CSV logger here holds all 8 rows in memory until then)."""
    from ember.callback import Logger
    from ember.logger_conformance import Handle, _module_class, _recorder, assert_stored, collapse, loader, make_trainer
    from ember.logger_readback import read_csv
    from ember.plugins.loggers import CSVLogger

    class Broken(Logger):
        def log_metrics(self, metrics, step):
            pass

        def finalize(self, status):
            raise OSError("disk gone")

    csv_logger, recorder = CSVLogger(str(tmp_path / "csv"), flush_secs=None), _recorder()
    trainer = make_trainer(str(tmp_path), [Broken(), csv_logger, recorder])
    with pytest.raises(OSError, match="disk gone") as info:
        trainer.fit(_module_class()(), loader(4, 0), loader(2, 1))
    assert any("Broken.finalize('success')" in note for note in info.value.__notes__)
    stored = read_csv(Handle(csv_logger.save_dir, csv_logger.log_dir, csv_logger.version, csv_logger.name))
    assert_stored(collapse(stored.series), recorder.series(), "the CSV logger after a broken one")
