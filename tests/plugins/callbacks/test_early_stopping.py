"""EarlyStopping against a real fit, with metric values the test dictates."""

from __future__ import annotations

import math

import pytest

from ember.plugins.callbacks import EarlyStopping, ModelCheckpoint
from ember.plugins.callbacks.early_stopping import DIVERGENCE_THRESHOLD, NON_FINITE, PATIENCE_EXHAUSTED, STOPPING_THRESHOLD
from ember.plugins.callbacks.model_checkpoint import MissingMetricError


def epochs_run(trainer) -> int:
    return trainer.current_epoch


def test_stops_after_patience_checks_without_improvement(make_trainer, regressor, loaders):
    # best at epoch 1 (0.2); epochs 2, 3, 4 don't beat it -> stop after epoch 4 with patience 3
    scores = [0.5, 0.2, 0.3, 0.25, 0.21, 0.1, 0.05, 0.01]
    es = EarlyStopping(monitor="score", patience=3)
    trainer = make_trainer(max_epochs=8, callbacks=[es])
    trainer.fit(regressor(val_scores=scores), *loaders)
    assert es.stopped_epoch == 4
    assert epochs_run(trainer) == 5 and trainer.global_step == 20
    assert es.stopping_reason == PATIENCE_EXHAUSTED and "score" in es.stopping_reason_message
    assert es.best_score == pytest.approx(0.2) and es.wait_count == 3


def test_mode_max_and_min_delta(make_trainer, regressor, loaders):
    # gains below min_delta=0.01 do not count; without min_delta this run would never stop
    scores = [0.5, 0.505, 0.508, 0.6, 0.601, 0.605, 0.607, 0.9]
    es = EarlyStopping(monitor="score", mode="max", patience=3, min_delta=0.01)
    trainer = make_trainer(max_epochs=8, callbacks=[es])
    trainer.fit(regressor(val_scores=scores), *loaders)
    assert es.stopped_epoch == 6 and epochs_run(trainer) == 7
    assert es.best_score == pytest.approx(0.6)
    plain = EarlyStopping(monitor="score", mode="max", patience=3)
    trainer = make_trainer(max_epochs=8, callbacks=[plain])
    trainer.fit(regressor(val_scores=scores), *loaders)
    assert epochs_run(trainer) == 8 and plain.best_score == pytest.approx(0.9)


def test_runs_to_the_end_while_improving(make_trainer, regressor, loaders):
    es = EarlyStopping(monitor="score", patience=1)
    trainer = make_trainer(max_epochs=4, callbacks=[es])
    trainer.fit(regressor(val_scores=[0.4, 0.3, 0.2, 0.1]), *loaders)
    assert epochs_run(trainer) == 4 and es.stopping_reason is None and es.stopped_epoch == 0


@pytest.mark.parametrize(
    ("kwargs", "scores", "epoch", "reason"),
    [
        ({"stopping_threshold": 0.15}, [0.5, 0.3, 0.1, 0.05, 0.01], 2, STOPPING_THRESHOLD),
        ({"divergence_threshold": 2.0}, [0.5, 0.3, 3.0, 0.05, 0.01], 2, DIVERGENCE_THRESHOLD),
        ({}, [0.5, 0.3, math.nan, 0.05, 0.01], 2, NON_FINITE),
        ({}, [0.5, math.inf, 0.3, 0.05, 0.01], 1, NON_FINITE),
    ],
)
def test_thresholds_and_non_finite(make_trainer, regressor, loaders, kwargs, scores, epoch, reason):
    es = EarlyStopping(monitor="score", patience=10, **kwargs)
    trainer = make_trainer(max_epochs=5, callbacks=[es])
    trainer.fit(regressor(val_scores=scores), *loaders)
    assert (es.stopped_epoch, es.stopping_reason) == (epoch, reason)
    assert epochs_run(trainer) == epoch + 1


def test_check_finite_off_keeps_going(make_trainer, regressor, loaders):
    es = EarlyStopping(monitor="score", patience=10, check_finite=False)
    trainer = make_trainer(max_epochs=3, callbacks=[es])
    trainer.fit(regressor(val_scores=[0.5, math.nan, 0.1]), *loaders)
    assert epochs_run(trainer) == 3 and es.best_score == pytest.approx(0.1)


def test_not_checked_during_sanity_check(make_trainer, regressor, loaders):
    # the sanity check logs epoch 0's score too; counted, it would use up the patience of 1
    es = EarlyStopping(monitor="score", patience=1)
    trainer = make_trainer(max_epochs=3, num_sanity_val_steps=2, callbacks=[es])
    trainer.fit(regressor(val_scores=[0.5, 0.4, 0.3]), *loaders)
    assert epochs_run(trainer) == 3


def test_checks_once_per_validation_run(make_trainer, regressor, loaders):
    # two validation runs per epoch (every 2 batches): each counts towards patience
    es = EarlyStopping(monitor="score", patience=3)
    trainer = make_trainer(max_epochs=5, val_check_interval=2, callbacks=[es])
    trainer.fit(regressor(val_scores=[0.5, 0.5, 0.5, 0.5, 0.5]), *loaders)
    # checks: e0 (best), e0, e1, e1 -> third check without improvement at epoch 1
    assert es.stopped_epoch == 1 and epochs_run(trainer) == 2


def test_without_validation_checks_at_train_epoch_end(make_trainer, train_only, loaders):
    es = EarlyStopping(monitor="train_loss", mode="min", patience=0, divergence_threshold=-1.0)
    trainer = make_trainer(max_epochs=3, callbacks=[es])
    trainer.fit(train_only(), loaders[0])
    # every loss is above -1: the divergence check stops the first time it looks, at the end of epoch 0
    assert (es.stopped_epoch, es.stopping_reason) == (0, DIVERGENCE_THRESHOLD) and epochs_run(trainer) == 1


def test_epoch_level_train_metric(make_trainer, train_only, loaders):
    es = EarlyStopping(monitor="train_score", patience=1)
    trainer = make_trainer(max_epochs=6, callbacks=[es])
    trainer.fit(train_only(train_scores=[0.5, 0.4, 0.45, 0.3, 0.2, 0.1]), loaders[0])
    assert es.stopped_epoch == 2


def test_check_on_train_epoch_end_true_ignores_validation_end(make_trainer, regressor, loaders):
    calls = []
    es = EarlyStopping(monitor="val_loss", patience=100, check_on_train_epoch_end=True)
    original = es._run_check
    es._run_check = lambda trainer: (calls.append((trainer.current_epoch, trainer.state.stage)), original(trainer))  # type: ignore[method-assign]
    make_trainer(max_epochs=2, callbacks=[es]).fit(regressor(), *loaders)
    assert calls == [(0, "train"), (1, "train")]


def test_missing_metric_strict_and_not(make_trainer, regressor, loaders):
    with pytest.raises(MissingMetricError, match=r"Did you mean 'val_loss'\?") as info:
        make_trainer(max_epochs=1, callbacks=[EarlyStopping(monitor="val_los")]).fit(regressor(), *loaders)
    assert "'train_loss'" in str(info.value)
    lenient = EarlyStopping(monitor="val_los", strict=False)
    trainer = make_trainer(max_epochs=2, callbacks=[lenient])
    with pytest.warns(UserWarning, match="val_los"):
        trainer.fit(regressor(), *loaders)
    assert epochs_run(trainer) == 2


def test_state_round_trip_through_a_checkpoint(tmp_path, make_trainer, regressor, loaders):
    import torch

    scores = [0.5, 0.2, 0.3, 0.4, 0.25, 0.26]
    es = EarlyStopping(monitor="score", patience=3)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=0)
    make_trainer(max_epochs=3, callbacks=[es, ck]).fit(regressor(val_scores=scores), *loaders)
    state = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["callbacks"][es.state_key]
    assert state["wait_count"] == 1 and state["best_score"] == pytest.approx(0.2)

    resumed = EarlyStopping(monitor="score", patience=3)
    trainer = make_trainer(max_epochs=6, callbacks=[resumed, ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=0)])
    trainer.fit(regressor(val_scores=scores), *loaders, ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    # restored wait_count 1: epochs 3 and 4 make it 3 -> stop at epoch 4 (a fresh callback would go on)
    assert resumed.stopped_epoch == 4 and epochs_run(trainer) == 5


def test_state_key_and_arguments():
    assert EarlyStopping("a").state_key != EarlyStopping("a", mode="max").state_key
    assert EarlyStopping("a").state_key != EarlyStopping("b").state_key
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping("a", mode="maximum")
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping("")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("a", patience=-1)


def test_registered_and_built_from_registry():
    from ember.plugin_manager import PluginManager

    pm = PluginManager()
    pm.load_builtins()
    es = pm.build_registry().create("callback", "early_stopping", monitor="val_loss", patience=5)
    assert isinstance(es, EarlyStopping) and es.patience == 5
