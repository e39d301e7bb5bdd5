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
