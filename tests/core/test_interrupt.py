"""``RunState.interrupt``: a request, set from a signal handler or another
thread, that the loops run once at their next safe point, after the batch
in progress and its end hooks, without any per-batch hook."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import torch

import ember
from ember.plugins.callbacks.fault_tolerance import FaultTolerance
from ember.testing import TinyModule, quiet_trainer


class RequestAt(ember.Callback):
    """Sets ``trainer.state.interrupt`` during ``training_step``-time hooks of
    ``batch`` in ``stage``, and records what ran after it."""

    def __init__(self, stage: str, batch: int) -> None:
        self.stage, self.batch = stage, batch
        self.events: list[str] = []

    def _request(self, trainer: Any) -> None:
        trainer.state.interrupt = lambda: self.events.append(f"interrupt at step {trainer.global_step}")

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if self.stage == "train" and batch_idx == self.batch:
            self._request(trainer)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.events.append(f"train_batch_end {batch_idx}")

    def on_validation_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.stage == "validate" and batch_idx == self.batch:
            self._request(trainer)

    def on_validation_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.events.append(f"validation_batch_end {batch_idx}")

    def on_predict_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.stage == "predict" and batch_idx == self.batch:
            self._request(trainer)

    def on_predict_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.events.append(f"predict_batch_end {batch_idx}")


def test_runs_once_after_the_training_batch_and_its_end_hooks(tmp_path: Any) -> None:
    spy = RequestAt("train", batch=1)
    quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0, callbacks=[spy]).fit(TinyModule())
    assert spy.events == ["train_batch_end 0", "train_batch_end 1", "interrupt at step 2", "train_batch_end 2", "train_batch_end 3"]


@pytest.mark.parametrize("stage", ["validate", "predict"])
def test_runs_after_an_evaluation_batch(tmp_path: Any, stage: str) -> None:
    spy = RequestAt(stage, batch=0)
    trainer = quiet_trainer(tmp_path, callbacks=[spy])
    (trainer.validate if stage == "validate" else trainer.predict)(TinyModule())
    hook = "validation_batch_end" if stage == "validate" else "predict_batch_end"
    assert spy.events[:2] == [f"{hook} 0", "interrupt at step 0"]
    assert trainer.state.interrupt is None


def test_an_exception_it_raises_ends_fit_after_the_step(tmp_path: Any) -> None:
    class Stop(Exception):
        pass

    def stop() -> None:
        raise Stop

    class Request(ember.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 2:
                trainer.state.interrupt = stop

    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[Request()])
    with pytest.raises(Stop):
        trainer.fit(TinyModule())
    assert trainer.global_step == 3, "the step in progress finishes first"


def test_fault_tolerance_adds_no_per_batch_hook() -> None:
    # It saves through the interrupt: a run that is never signalled pays nothing per batch.
    for hook in ("on_train_batch_end", "on_validation_batch_end", "on_train_batch_start"):
        assert hook not in vars(FaultTolerance), hook


def test_fault_tolerance_signal_sets_the_interrupt(tmp_path: Any) -> None:
    seen: list[Any] = []

    class Signal(ember.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 1:
                signal.raise_signal(signal.SIGTERM)
                seen.append(trainer.state.interrupt)

    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_fault_tolerance=True, callbacks=[Signal()])
    with pytest.raises(ember.Preempted):
        trainer.fit(TinyModule())
    assert seen and seen[0] is not None
    assert trainer.global_step == 2
    assert torch.load(trainer.resume_checkpoint_path, weights_only=True)["global_step"] == 2
