"""Trainer arguments that shape the fit loop: how long it runs, which batches
it uses, when it validates, and how it accumulates and clips gradients —
each checked against counts or a hand-written training loop."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import ember


def _reference(
    h: Any, batches: list[Any], accumulate: int = 1, clip: tuple[float, str] | None = None, lr: float = 0.05
) -> list[torch.Tensor]:
    """Plain PyTorch: loss / accumulate, step every ``accumulate`` batches and at the end."""
    model = h.Regressor(lr=lr)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    for i, batch in enumerate(batches):
        loss = model.loss(batch)
        (loss / accumulate if accumulate > 1 else loss).backward()
        if (i + 1) % accumulate == 0 or i == len(batches) - 1:
            if clip is not None:
                if clip[1] == "norm":
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip[0])
                else:
                    torch.nn.utils.clip_grad_value_(model.parameters(), clip[0])
            opt.step()
            opt.zero_grad()
    return h.params_of(model)


class _StopAt(ember.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) >= self.at:
            trainer.should_stop = True


# --------------------------------------------------------------------------- how long
def test_max_epochs(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_epochs=3)
    trainer.fit(model, h.loader(32, 8))
    assert (trainer.current_epoch, trainer.global_step, len(model.train_batches)) == (3, 12, 12)
    assert trainer.state.status == "finished" and trainer.state.fn == "fit"


def test_max_steps_stops_mid_epoch(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_steps=6, max_epochs=10)
    trainer.fit(model, h.loader(32, 8))
    assert trainer.global_step == 6 and len(model.train_batches) == 6
    assert trainer.current_epoch == 2  # the interrupted epoch still ends (as in Lightning)


def test_max_steps_alone_means_no_epoch_limit(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_steps=30)
    assert trainer.max_epochs == -1
    trainer.fit(h.Regressor(), h.loader(16, 8))
    assert trainer.global_step == 30 and trainer.current_epoch == 15


def test_should_stop_stops_after_the_batch(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_epochs=5, callbacks=[_StopAt(1, 1)])
    trainer.fit(model, h.loader(32, 8))
    assert len(model.train_batches) == 6 and trainer.global_step == 6
    assert trainer.should_stop


def test_should_stop_waits_for_min_steps(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_epochs=5, min_steps=7, callbacks=[_StopAt(0, 0)])
    trainer.fit(model, h.loader(32, 8))
    assert trainer.global_step == 7


def test_min_epochs_overrides_an_early_stop_request(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_epochs=5, min_epochs=3, callbacks=[_StopAt(0, 0)])
    trainer.fit(model, h.loader(32, 8))
    assert trainer.current_epoch == 3
    assert len(model.train_batches) >= 9


def test_min_epochs_are_whole_epochs(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_epochs=5, min_epochs=3, callbacks=[_StopAt(0, 0)])
    trainer.fit(model, h.loader(32, 8))
    assert len(model.train_batches) == 12


def test_max_time_with_a_slow_step(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    model.step_hook = lambda m, b, i: (time.sleep(0.3), ...)[1]
    trainer = make_trainer(max_time="00:00:00:01")
    assert trainer.max_epochs == -1 and trainer.max_time == 1.0
    start = time.monotonic()
    trainer.fit(model, h.loader(256, 8))
    assert 3 <= trainer.global_step <= 5
    assert time.monotonic() - start < 2.5


def test_max_time_spent_in_validation_stops_right_after_it(h: Any, make_trainer: Any) -> None:
    """max_time is one of fit's stop conditions wherever they are checked:
    when it runs out during an in-epoch validation, training stops after that
    validation, without one more batch."""

    class SlowValidation(h.Regressor):
        def on_validation_end(self) -> None:
            time.sleep(0.6)

    model = SlowValidation()
    trainer = make_trainer(max_time={"seconds": 0.5}, val_check_interval=1, limit_val_batches=1)
    trainer.fit(model, h.loader(64, 8), h.loader(16, 8))
    assert trainer.global_step == 1 and len(model.train_batches) == 1


@pytest.mark.parametrize("value", [0, {"seconds": 0}, "00:00:00:00"])
def test_max_time_zero_trains_nothing(h: Any, make_trainer: Any, value: Any) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_time=value)
    trainer.fit(model, h.loader(32, 8))
    assert trainer.global_step == 0 and model.train_batches == []


def test_bad_max_time(make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="DD:HH:MM:SS"):
        make_trainer(max_time="one minute")


# --------------------------------------------------------------------------- which batches
@pytest.mark.parametrize("limit,expected", [(2, 2), (0.5, 2), (0.25, 1), (1.0, 4), (10, 4)])
def test_limit_train_batches(h: Any, make_trainer: Any, limit: Any, expected: int) -> None:
    model = h.TrainOnly()
    trainer = make_trainer(max_epochs=2, limit_train_batches=limit)
    trainer.fit(model, h.loader(32, 8))
    assert trainer.num_training_batches == expected
    assert trainer.global_step == 2 * expected


def test_limit_train_batches_zero_trains_nothing(h: Any, make_trainer: Any) -> None:
    model = h.TrainOnly()
    trainer = make_trainer(max_epochs=2, limit_train_batches=0)
    with pytest.warns(UserWarning, match="Trainer.fit stopped: no training batches: limit_train_batches=0"):
        trainer.fit(model, h.loader(32, 8))
    assert trainer.global_step == 0 and model.train_batches == []


@pytest.mark.parametrize("limit,expected", [(1, 1), (0.5, 2), (0, 0)])
def test_limit_val_batches(h: Any, make_trainer: Any, limit: Any, expected: int) -> None:
    model = h.Regressor()
    trainer = make_trainer(max_epochs=2, limit_val_batches=limit)
    trainer.fit(model, h.loader(16, 8), h.loader(32, 8))
    assert model.val_calls == 2 * expected


@pytest.mark.parametrize("limit,expected", [(3, 3), (0.5, 2), (1.0, 4)])
def test_limit_test_and_predict_batches(h: Any, make_trainer: Any, limit: Any, expected: int) -> None:
    model = h.Regressor()
    make_trainer(limit_test_batches=limit).test(model, h.loader(32, 8), verbose=False)
    assert model.test_calls == expected
    preds = make_trainer(limit_predict_batches=limit).predict(model, h.loader(32, 8))
    assert len(preds) == expected


def test_bad_limits_are_clear_errors(h: Any, make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="limit_train_batches=0.1 of 4 batches is less than one batch"):
        make_trainer(max_epochs=1, limit_train_batches=0.1).fit(h.TrainOnly(), h.loader(32, 8))
    with pytest.raises(ValueError, match="limit_val_batches=1.5"):
        make_trainer(max_epochs=1, limit_val_batches=1.5).fit(h.Regressor(), h.loader(32, 8), h.loader(32, 8))


def test_overfit_batches_reuses_the_first_batches_unshuffled(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    shuffled = h.loader(64, 8, shuffle=True)
    trainer = make_trainer(max_epochs=3, overfit_batches=2)
    trainer.fit(model, shuffled, h.loader(32, 8))
    first_two = shuffled.dataset.tensors[0][:16]
    assert len(model.train_batches) == 6
    for i, batch in enumerate(model.train_batches):
        assert torch.equal(batch, first_two[(i % 2) * 8 : (i % 2) * 8 + 8])
    assert model.val_calls == 3 * 2


# --------------------------------------------------------------------------- when to validate
@pytest.mark.parametrize(
    "kwargs,runs",
    [
        ({}, [(0, 4), (1, 8)]),
        ({"val_check_interval": 0.5}, [(0, 2), (0, 4), (1, 6), (1, 8)]),
        ({"val_check_interval": 1}, [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (1, 6), (1, 7), (1, 8)]),
        ({"val_check_interval": 2}, [(0, 2), (0, 4), (1, 6), (1, 8)]),
        ({"check_val_every_n_epoch": 2}, [(1, 8)]),
    ],
)
def test_validation_schedule(h: Any, make_trainer: Any, kwargs: dict[str, Any], runs: list[tuple[int, int]]) -> None:
    counter = h.Counter()
    model = h.Regressor()
    trainer = make_trainer(max_epochs=2, callbacks=[counter], **kwargs)
    trainer.fit(model, h.loader(32, 8), h.loader(16, 8))
    assert counter.val_runs == runs
    assert model.val_calls == 2 * len(runs)


def test_check_val_every_n_epoch_over_more_epochs(h: Any, make_trainer: Any) -> None:
    counter = h.Counter()
    make_trainer(max_epochs=7, check_val_every_n_epoch=3, callbacks=[counter]).fit(h.Regressor(), h.loader(16, 8), h.loader(16, 8))
    assert [epoch for epoch, _ in counter.val_runs] == [2, 5]


def test_int_val_check_interval_validates_only_on_multiples(h: Any, make_trainer: Any) -> None:
    counter = h.Counter()
    make_trainer(max_epochs=1, val_check_interval=3, callbacks=[counter]).fit(h.Regressor(), h.loader(32, 8), h.loader(16, 8))
    assert counter.val_runs == [(0, 3)]


def test_bad_val_check_interval(h: Any, make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="val_check_interval=5 is more than the 4 training batches"):
        make_trainer(max_epochs=1, val_check_interval=5).fit(h.Regressor(), h.loader(32, 8), h.loader(16, 8))
    with pytest.raises(ValueError, match="val_check_interval=1.5"):
        make_trainer(max_epochs=1, val_check_interval=1.5).fit(h.Regressor(), h.loader(32, 8), h.loader(16, 8))


@pytest.mark.parametrize("steps,expected", [(0, 0), (2, 2), (-1, 3), (None, 2), (10, 3)])
def test_num_sanity_val_steps(h: Any, make_trainer: Any, steps: Any, expected: int) -> None:
    counter = h.Counter()
    model = h.Regressor()
    trainer = make_trainer(max_epochs=1, num_sanity_val_steps=steps, callbacks=[counter])
    trainer.fit(model, h.loader(16, 8), h.loader(24, 8))
    assert model.sanity_val_calls == expected
    assert counter.sanity_runs == (1 if expected else 0)
    assert model.val_calls == 3
    assert "val_loss" in trainer.callback_metrics


def test_sanity_check_metrics_do_not_count(h: Any, make_trainer: Any) -> None:
    seen: list[Any] = []

    class Look(ember.Callback):
        def on_train_start(self, trainer: Any, module: Any) -> None:
            seen.append(dict(trainer.callback_metrics))

    make_trainer(max_epochs=1, num_sanity_val_steps=2, callbacks=[Look()]).fit(h.Regressor(), h.loader(16, 8), h.loader(16, 8))
    assert seen == [{}]


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("accumulate,n", [(2, 32), (3, 32), (4, 32), (3, 40)])
def test_accumulate_grad_batches_equals_a_hand_written_loop(h: Any, make_trainer: Any, accumulate: int, n: int) -> None:
    data = h.loader(n, 8)
    model = h.Regressor()
    trainer = make_trainer(max_epochs=1, accumulate_grad_batches=accumulate)
    trainer.fit(model, data)
    batches = list(data)
    assert trainer.global_step == -(-len(batches) // accumulate)
    expected = _reference(h, batches, accumulate=accumulate)
    assert all(torch.allclose(a, b, atol=1e-7, rtol=0) for a, b in zip(h.params_of(model), expected, strict=False))


def test_accumulation_fires_zero_grad_once_per_window(h: Any, make_trainer: Any) -> None:
    events: list[tuple[str, int]] = []

    class Look(ember.Callback):
        def on_before_zero_grad(self, trainer: Any, module: Any, optimizer: Any) -> None:
            events.append(("zero", trainer.global_step))

        def on_before_optimizer_step(self, trainer: Any, module: Any, optimizer: Any) -> None:
            events.append(("step", trainer.global_step))

    make_trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[Look()]).fit(h.Regressor(), h.loader(32, 8))
    assert events == [("zero", 0), ("step", 0), ("zero", 1), ("step", 1)]


def test_bad_accumulate_grad_batches(make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="accumulate_grad_batches=0"):
        make_trainer(accumulate_grad_batches=0)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_equals_a_hand_written_loop(h: Any, make_trainer: Any, algorithm: str) -> None:
    data = h.loader(32, 8)
    grad_norms: list[float] = []

    class Look(ember.Callback):
        def on_before_optimizer_step(self, trainer: Any, module: Any, optimizer: Any) -> None:
            # runs before clipping: the raw gradients
            grad_norms.append(torch.cat([p.grad.flatten() for p in module.parameters()]).norm().item())

    model = h.Regressor(lr=0.1)
    trainer = make_trainer(max_epochs=2, gradient_clip_val=0.5, gradient_clip_algorithm=algorithm, callbacks=[Look()])
    trainer.fit(model, data)
    expected = _reference(h, list(data) * 2, clip=(0.5, algorithm), lr=0.1)
    assert h.same(h.params_of(model), expected)
    assert max(grad_norms) > 0.5  # clipping had something to do
    unclipped = _reference(h, list(data) * 2, lr=0.1)
    assert not h.same(h.params_of(model), unclipped)


def test_configure_gradient_clipping_override(h: Any, make_trainer: Any) -> None:
    calls: list[tuple[Any, Any]] = []

    class Custom(h.Regressor):  # type: ignore[misc, name-defined]
        def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None) -> None:
            calls.append((gradient_clip_val, gradient_clip_algorithm))
            self.clip_gradients(optimizer, 0.01, "value")

    data = h.loader(16, 8)
    model = Custom(lr=0.1)
    make_trainer(max_epochs=1).fit(model, data)
    assert calls == [(None, "norm"), (None, "norm")]
    assert h.same(h.params_of(model), _reference(h, list(data), clip=(0.01, "value"), lr=0.1))


def test_bad_clip_algorithm(make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="gradient_clip_algorithm='l2'"):
        make_trainer(gradient_clip_val=1.0, gradient_clip_algorithm="l2")


# --------------------------------------------------------------------------- logging cadence
@pytest.mark.parametrize("every,steps", [(1, [1, 2, 3, 4, 5, 6, 7, 8]), (3, [3, 6]), (4, [4, 8]), (50, [])])
def test_log_every_n_steps(h: Any, make_trainer: Any, every: int, steps: list[int]) -> None:
    logger = h.RecordingLogger()

    class Indexed(h.TrainOnly):  # type: ignore[misc, name-defined]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("seen_step", float(self.global_step + 1))
            return super().training_step(batch, batch_idx)

    make_trainer(max_epochs=2, log_every_n_steps=every, logger=logger).fit(Indexed(), h.loader(32, 8))
    # the value logged in the step that reached the logged global step
    assert logger.steps_with("seen_step") == [(s, float(s)) for s in steps]


def test_bad_log_every_n_steps(make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="log_every_n_steps=0"):
        make_trainer(log_every_n_steps=0)


def test_iterable_dataset_without_length(h: Any, make_trainer: Any) -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            data = h.regression_data(40)
            return iter(zip(data.tensors[0], data.tensors[1], strict=False))

    model = h.TrainOnly()
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, DataLoader(Stream(), batch_size=8))
    assert trainer.num_training_batches == float("inf")
    assert trainer.global_step == 10
    trainer = make_trainer(max_epochs=1, limit_train_batches=3)
    trainer.fit(h.TrainOnly(), DataLoader(Stream(), batch_size=8))
    assert trainer.global_step == 3
    with pytest.raises(ValueError, match="limit_train_batches=0.5 is a fraction, but the dataloader has no length"):
        make_trainer(max_epochs=1, limit_train_batches=0.5).fit(h.TrainOnly(), DataLoader(Stream(), batch_size=8))
