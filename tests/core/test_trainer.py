"""The Trainer's construction and entry points: observers (loggers,
callbacks, default slots), fast_dev_run, determinism, the values
validate/test/predict return, and the per-step dispatch tuples."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

import ember


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- loggers
def test_logger_forms(h: Any, tmp_path: Path) -> None:
    assert h.quiet_trainer(tmp_path, logger=False).loggers == []
    default = h.quiet_trainer(tmp_path, logger=True)
    # Lightning's default: TensorBoard when installed (it is, in the dev environment), else CSV.
    expected = "TensorBoardLogger" if importlib.util.find_spec("tensorboard") else "CSVLogger"
    assert len(default.loggers) == 1 and type(default.loggers[0]).__name__ == expected
    assert type(h.quiet_trainer(tmp_path, logger=None).logger).__name__ == expected
    assert type(h.quiet_trainer(tmp_path, logger=None, disable_plugins=["tensorboard"]).logger).__name__ == "CSVLogger"
    one = h.RecordingLogger()
    assert h.quiet_trainer(tmp_path, logger=one).loggers == [one] and h.quiet_trainer(tmp_path, logger=one).logger is one
    two = [h.RecordingLogger(), h.RecordingLogger()]
    trainer = h.quiet_trainer(tmp_path, logger=two, log_every_n_steps=1, max_epochs=1)
    trainer.fit(h.Regressor(), h.loader(16, 8))
    assert trainer.loggers == two
    assert two[0].records == two[1].records and [s for s, _ in two[0].records] == [1, 2]
    assert two[0].finalized == ["success"]


@pytest.mark.slow  # imports TensorBoard (seconds)
def test_default_logger_writes_under_default_root_dir(h: Any, tmp_path: Path) -> None:
    trainer = h.quiet_trainer(tmp_path, logger=True, enable_checkpointing=True)
    trainer.fit(h.Regressor(), h.loader(16, 8), h.loader(16, 8))
    assert trainer.log_dir.startswith(str(tmp_path))
    files = _files_under(tmp_path)
    # As in Lightning: TensorBoard when it is installed, else CSV.
    try:
        import tensorboard  # noqa: F401

        assert type(trainer.logger).__name__ == "TensorBoardLogger"
        assert any("events.out.tfevents" in f for f in files)
    except ImportError:
        assert any(f.endswith("metrics.csv") for f in files)
    assert any(f.endswith(".ckpt") for f in files)
    assert trainer.checkpoint_callback is not None


def test_log_dir_without_logger_is_default_root_dir(h: Any, tmp_path: Path) -> None:
    assert h.quiet_trainer(tmp_path / "root").log_dir == str(tmp_path / "root")


def test_failed_run_finalizes_loggers_with_failed(h: Any, make_trainer: Any) -> None:
    logger = h.RecordingLogger()
    model = h.Regressor()
    model.step_hook = lambda m, b, i: (_ for _ in ()).throw(RuntimeError("boom"))
    trainer = make_trainer(max_epochs=1, logger=logger)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model, h.loader(16, 8))
    assert logger.finalized == ["failed"] and trainer.state.status == "failed"


# --------------------------------------------------------------------------- callbacks and default slots
def test_callbacks_fire_in_list_order(h: Any, make_trainer: Any) -> None:
    order: list[str] = []

    def tagged(tag: str) -> ember.Callback:
        class Tagged(ember.Callback):
            def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
                order.append(tag)

            def on_train_batch_end(self, *args: Any) -> None:
                order.append(tag.lower())

        return Tagged()

    trainer = make_trainer(max_epochs=1, callbacks=[tagged("B"), tagged("A"), tagged("C")])
    trainer.fit(h.Regressor(), h.loader(8, 8))
    assert order == ["b", "a", "c", "B", "A", "C"]


def test_single_callback_and_bad_callback(h: Any, make_trainer: Any) -> None:
    counter = h.Counter()
    assert make_trainer(callbacks=counter).callbacks[0] is counter
    with pytest.raises(ValueError, match=r"Trainer\(callbacks=\[<object>\]\) is not valid: callbacks takes an ember.Callback or a list of them"):
        make_trainer(callbacks=[object()])


def test_default_slots(h: Any, tmp_path: Path) -> None:
    def fills(trainer: Any) -> list[str]:
        return [cb.fills for cb in trainer.callbacks if cb.fills in ("progress_bar", "model_summary", "model_checkpoint")]

    everything = ember.Trainer(default_root_dir=tmp_path, logger=False)
    assert fills(everything) == ["progress_bar", "model_summary", "model_checkpoint"]
    assert everything.progress_bar_callback is not None and everything.checkpoint_callback is everything.callbacks[-1]
    nothing = h.quiet_trainer(tmp_path)
    assert fills(nothing) == [] and nothing.progress_bar_callback is None and nothing.checkpoint_callback is None
    assert fills(ember.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)) == ["model_summary", "model_checkpoint"]


def test_disabled_observers_write_nothing(h: Any, tmp_path: Path, capsys: Any) -> None:
    trainer = h.quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(h.Regressor(), h.loader(16, 8), h.loader(16, 8))
    assert _files_under(tmp_path) == []
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- fast_dev_run
@pytest.mark.parametrize("value,batches", [(True, 1), (3, 3)])
def test_fast_dev_run(h: Any, tmp_path: Path, value: Any, batches: int) -> None:
    model = h.Regressor()
    trainer = ember.Trainer(default_root_dir=tmp_path, fast_dev_run=value, enable_progress_bar=False, enable_model_summary=False)
    assert trainer.loggers == [] and trainer.checkpoint_callback is None
    trainer.fit(model, h.loader(64, 8), h.loader(64, 8))
    assert trainer.global_step == batches and trainer.current_epoch == 1
    assert model.val_calls == batches and model.sanity_val_calls == 0
    model.test_calls = 0
    trainer.test(model, h.loader(64, 8), verbose=False)
    assert model.test_calls == batches
    assert len(trainer.predict(model, h.loader(64, 8))) == batches
    assert _files_under(tmp_path) == []


def test_bad_fast_dev_run(make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="fast_dev_run=-1"):
        make_trainer(fast_dev_run=-1)


# --------------------------------------------------------------------------- determinism
def test_deterministic_turns_on_deterministic_algorithms(make_trainer: Any) -> None:
    torch.use_deterministic_algorithms(False)
    make_trainer(deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    make_trainer(deterministic="warn")
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_seeded_runs_with_shuffling_and_dropout_are_identical(h: Any, make_trainer: Any) -> None:
    class Dropout(h.Regressor):  # type: ignore[misc, name-defined]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(torch.nn.functional.dropout(x, 0.3, self.training))

    def run(seed: int) -> list[torch.Tensor]:
        model = Dropout()  # (the helper seeds its own initial weights)
        assert ember.seed_everything(seed) == seed
        make_trainer(max_epochs=2, deterministic=True, num_sanity_val_steps=2).fit(model, h.loader(32, 8, shuffle=True), h.loader(16, 8))
        return h.params_of(model)

    assert h.same(run(3), run(3))
    assert not h.same(run(3), run(4))


# --------------------------------------------------------------------------- validate / test / predict
def test_validate_and_test_return_one_dict_per_dataloader(h: Any, make_trainer: Any, capsys: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer()
    val = trainer.validate(model, h.loader(16, 8))
    assert isinstance(val, list) and len(val) == 1 and set(val[0]) == {"val_loss"}
    assert "validate results" in capsys.readouterr().out
    assert trainer.state.fn == "validate" and trainer.global_step == 0
    tests = trainer.test(model, [h.loader(16, 8), h.loader(8, 8, seed=5)], verbose=False)
    assert [set(d) for d in tests] == [{"test_loss/dataloader_idx_0"}, {"test_loss/dataloader_idx_1"}]
    assert capsys.readouterr().out == ""
    with torch.no_grad():
        expected = model.loss(h.loader(8, 8, seed=5).dataset.tensors).item()
    assert tests[1]["test_loss/dataloader_idx_1"] == pytest.approx(expected)


def test_validate_uses_the_model_from_the_last_fit(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, h.loader(16, 8), h.loader(16, 8))
    [metrics] = trainer.validate(dataloaders=h.loader(16, 8), verbose=False)
    assert metrics["val_loss"] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    with pytest.raises(TypeError, match="needs a model"):
        make_trainer().validate()


def test_predict_returns_predictions(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    data = h.loader(20, 8)
    trainer = make_trainer()
    preds = trainer.predict(model, data)
    assert [p.shape for p in preds] == [(8, 1), (8, 1), (4, 1)]
    with torch.no_grad():
        assert torch.equal(torch.cat(preds), model(data.dataset.tensors[0]))
    assert all(not p.requires_grad for p in preds)
    two = trainer.predict(model, [data, h.loader(8, 4)])
    assert [len(p) for p in two] == [3, 2]
    assert trainer.predict(model, data, return_predictions=False) is None
    assert model.training  # put back in train mode


def test_evaluation_runs_without_grad_and_in_eval_mode(h: Any, make_trainer: Any) -> None:
    seen: list[tuple[bool, bool]] = []

    class Look(h.Regressor):  # type: ignore[misc, name-defined]
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            seen.append((torch.is_grad_enabled(), self.training))

    make_trainer().validate(Look(), h.loader(8, 8), verbose=False)
    make_trainer(inference_mode=False).validate(Look(), h.loader(8, 8), verbose=False)
    assert seen == [(False, False), (False, False)]


def test_missing_steps_and_data_are_clear_errors(h: Any, make_trainer: Any) -> None:
    with pytest.raises(NotImplementedError, match="TrainOnly.validation_step"):
        make_trainer().validate(h.TrainOnly(), h.loader(8, 8))
    with pytest.raises(ValueError, match="No test data"):
        make_trainer().test(h.Regressor())
    with pytest.raises(TypeError, match="expects an ember.Module, got Linear"):
        make_trainer().fit(torch.nn.Linear(1, 1))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- per-step dispatch
PER_STEP = (
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_start",
    "on_train_batch_end",
)


def test_unimplemented_per_step_hooks_are_empty_tuples(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    trainer.fit(h.Regressor(), h.loader(8, 8))
    assert trainer._dispatch.on_before_backward == ()
    observers = [*trainer.callbacks, *trainer.loggers]
    for name in PER_STEP:
        implemented = any(getattr(type(o), name) is not getattr(ember.Callback, name) for o in observers)
        assert (getattr(trainer._dispatch, name) != ()) == implemented, name


def test_overriding_callbacks_and_modules_appear_in_the_dispatch(h: Any, make_trainer: Any) -> None:
    calls: list[str] = []

    class Watch(ember.Callback):
        def on_before_backward(self, trainer: Any, module: Any, loss: Any) -> None:
            calls.append("callback")

    class Mod(h.Regressor):  # type: ignore[misc, name-defined]
        def on_before_backward(self, loss: Any) -> None:
            calls.append("module")

    trainer = make_trainer(max_epochs=1, callbacks=[Watch()])
    trainer.fit(Mod(), h.loader(16, 8))
    assert len(trainer._dispatch.on_before_backward) == 2
    assert trainer._dispatch.on_after_backward == ()
    assert calls == ["callback", "module"] * 2


def test_disabling_the_plugin_of_a_default_slot_drops_that_default(tmp_path) -> None:
    trainer = ember.Trainer(disable_plugins=["fault_tolerance", "progress"], logger=False, default_root_dir=tmp_path)
    fills = {cb.fills for cb in trainer.callbacks}
    assert "fault_tolerance" not in fills and "progress_bar" not in fills
    assert "model_checkpoint" in fills
