"""``self.log`` / ``log_dict``: what ``ember.results.Results`` records and how
it reduces, and the values ``trainer.callback_metrics``,
``trainer.logged_metrics``, ``trainer.progress_bar_metrics`` and the loggers
end up with after real fits, checked against values computed by hand."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.results import Results, extract_batch_size


def _log(results: Results, name: str, value: Any, **kw: Any) -> None:
    args = dict(
        prog_bar=False,
        logger=None,
        on_step=None,
        on_epoch=None,
        reduce_fx="mean",
        enable_graph=False,
        sync_dist=False,
        add_dataloader_idx=True,
        batch_size=None,
    )
    args.update(kw)
    results.log(name, value, **args)


# --------------------------------------------------------------------------- Results, directly
def test_mean_is_weighted_by_the_inferred_batch_size() -> None:
    r = Results(default_on_step=False, default_on_epoch=True)
    for size, value in [(4, 1.0), (4, 2.0), (2, 4.0)]:
        r.new_batch((torch.zeros(size, 3), torch.zeros(size)))
        _log(r, "m", torch.tensor(value))
    callback, logged = r.finalize_epoch()
    assert callback["m"].item() == pytest.approx((4 * 1 + 4 * 2 + 2 * 4) / 10)
    assert logged == {"m": callback["m"]}


def test_explicit_batch_size_wins() -> None:
    r = Results(default_on_step=False, default_on_epoch=True)
    r.new_batch(torch.zeros(8, 1))
    _log(r, "m", 1.0, batch_size=1)
    _log(r, "n", 1.0)
    r.new_batch(torch.zeros(8, 1))
    _log(r, "m", 3.0, batch_size=3)
    _log(r, "n", 3.0)
    callback, _ = r.finalize_epoch()
    assert callback["m"].item() == pytest.approx((1 + 9) / 4)
    assert callback["n"].item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "reduce_fx,expected",
    [("sum", 7.0), ("max", 4.0), ("min", -1.0), ("mean", 7.0 / 3), ("avg", 7.0 / 3), (torch.max, 4.0), (torch.sum, 7.0), (min, -1.0)],
)
def test_reductions(reduce_fx: Any, expected: float) -> None:
    r = Results(default_on_step=False, default_on_epoch=True)
    for v in (4.0, -1.0, 4.0):
        r.new_batch(torch.zeros(5))
        _log(r, "v", torch.tensor(v), reduce_fx=reduce_fx)
    callback, _ = r.finalize_epoch()
    assert callback["v"].item() == pytest.approx(expected)


def test_many_values_are_folded_without_changing_the_result() -> None:
    r = Results(default_on_step=False, default_on_epoch=True)
    values = torch.arange(1000, dtype=torch.float32)
    for i, v in enumerate(values):
        r.new_batch(torch.zeros(1 + i % 3))
        _log(r, "mean", v)
        _log(r, "max", v, reduce_fx="max")
        _log(r, "sum", v, reduce_fx="sum")
    callback, _ = r.finalize_epoch()
    weights = torch.tensor([1 + i % 3 for i in range(1000)], dtype=torch.float32)
    assert callback["mean"].item() == pytest.approx(((values * weights).sum() / weights.sum()).item(), rel=1e-6)
    assert callback["max"].item() == 999.0
    assert callback["sum"].item() == pytest.approx(values.sum().item())


def _epoch_of(values: torch.Tensor, sizes: list[int], read_every: int = 0, resume_at: int = -1) -> dict[str, torch.Tensor]:
    """The epoch values of logging ``values`` (mean and sum), reading the
    running value every ``read_every`` steps and/or saving the results at
    ``resume_at`` and going on in a fresh ``Results`` loaded from the save."""
    r = Results(default_on_step=True, default_on_epoch=True)
    for i, (v, size) in enumerate(zip(values, sizes, strict=True)):
        if i == resume_at:
            saved = r.state_dict()
            r = Results(default_on_step=True, default_on_epoch=True)
            r.load_state_dict(saved)
        r.new_batch(torch.zeros(size, 2))
        _log(r, "mean", v)
        _log(r, "sum", v, reduce_fx="sum")
        if read_every and i % read_every == 0:
            r.live_metrics()
    callback, _ = r.finalize_epoch()
    return callback


@pytest.mark.parametrize("sizes", [[8] * 700, [8, 8, 3] * 233 + [5]])
def test_epoch_value_does_not_depend_on_reads_or_resume(sizes: list[int]) -> None:
    """Reading ``callback_metrics`` mid-epoch (a callback monitoring every
    step) and saving/resuming mid-epoch leave the epoch mean and sum the same
    bit for bit: the values are folded at the same counts either way."""
    values = torch.rand(len(sizes), generator=torch.Generator().manual_seed(0)) * 100
    plain = _epoch_of(values, sizes)
    for other in (_epoch_of(values, sizes, read_every=7), _epoch_of(values, sizes, resume_at=301), _epoch_of(values, sizes, 3, 41)):
        for key in ("mean", "sum", "mean_epoch"):
            assert torch.equal(other[key], plain[key]), key


def test_step_and_epoch_names() -> None:
    r = Results(default_on_step=True, default_on_epoch=False)
    r.new_batch(torch.zeros(2))
    _log(r, "both", 1.0, on_epoch=True)
    _log(r, "step_only", 5.0)
    _log(r, "hidden", 6.0, logger=False)
    assert r.step_values() == {"both_step": 1.0, "step_only": 5.0}
    assert r.step_values() == {}  # nothing fresh until the next log
    assert r.step_values(only_fresh=False, for_logger=False) == {"both_step": 1.0, "step_only": 5.0, "hidden": 6.0}
    r.new_batch(torch.zeros(2))
    _log(r, "both", 3.0, on_epoch=True)
    assert r.step_values() == {"both_step": 3.0}
    callback, logged = r.finalize_epoch()
    assert set(callback) == {"both", "both_epoch"} and callback["both_epoch"].item() == 2.0
    assert set(logged) == {"both_epoch"}


def test_logging_errors() -> None:
    r = Results(default_on_step=False, default_on_epoch=True)
    r.new_batch(torch.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(2,\); log a scalar"):
        _log(r, "vec", torch.zeros(2))
    with pytest.raises(ValueError, match="reduce_fx='median'"):
        _log(r, "x", 1.0, reduce_fx="median")
    with pytest.raises(TypeError, match="got a str"):
        _log(r, "s", "high")


def test_dataloader_suffix() -> None:
    r = Results(default_on_step=False, default_on_epoch=True)
    r.new_batch(torch.zeros(2))
    r.dataloader_suffix = "/dataloader_idx_1"
    _log(r, "a", 1.0)
    _log(r, "b", 2.0, add_dataloader_idx=False)
    callback, _ = r.finalize_epoch()
    assert set(callback) == {"a/dataloader_idx_1", "b"}


def test_extract_batch_size() -> None:
    assert extract_batch_size(torch.zeros(7, 2)) == 7
    assert extract_batch_size(torch.tensor(3.0)) == 1
    assert extract_batch_size([torch.zeros(0), torch.zeros(5)]) == 5
    assert extract_batch_size({"x": torch.zeros(6, 1), "y": [1]}) == 6
    assert extract_batch_size(["text"]) == 0


# --------------------------------------------------------------------------- through a fit
def _uneven_loader() -> DataLoader:
    """10 samples in batches of 4, 4 and 2."""
    g = torch.Generator().manual_seed(3)
    return DataLoader(TensorDataset(torch.randn(10, 4, generator=g), torch.randn(10, 1, generator=g)), batch_size=4)


class _Logs(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.train_losses: list[tuple[float, int]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.train_losses.append((loss.item(), len(x)))
        value = float(batch_idx + 1)
        self.log("a", value, on_step=True, on_epoch=True, prog_bar=True)
        self.log("loss", loss, on_epoch=True)
        self.log_dict({"d1": 10.0 * value, "d2": -value}, reduce_fx="max", on_epoch=True, on_step=False)
        self.log("secret", value, logger=False)
        self.log("total", len(x), on_step=False, on_epoch=True, reduce_fx="sum")
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))
        self.log("val_max", y.max(), reduce_fx="max")
        self.log("val_min", y.min(), reduce_fx="min")
        self.log("val_count", len(x), reduce_fx="sum", prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.log("from_epoch_end", 42.0)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)  # frozen: the hand computations stay valid


def test_training_metrics_after_an_epoch(h: Any, make_trainer: Any) -> None:
    logger = h.RecordingLogger()
    model = _Logs()
    trainer = make_trainer(max_epochs=1, logger=logger, log_every_n_steps=1)
    trainer.fit(model, _uneven_loader())
    cm = trainer.callback_metrics
    weighted = (1 * 4 + 2 * 4 + 3 * 2) / 10
    assert float(cm["a_step"]) == 3.0
    assert float(cm["a_epoch"]) == pytest.approx(weighted)
    loss_mean = sum(loss * n for loss, n in model.train_losses) / 10
    assert float(cm["loss_epoch"]) == pytest.approx(loss_mean, rel=1e-6)
    assert float(cm["d1"]) == 30.0 and float(cm["d2"]) == -1.0
    assert float(cm["total"]) == 10.0
    assert float(cm["secret"]) == 3.0
    assert float(cm["from_epoch_end"]) == 42.0

    lm = trainer.logged_metrics
    assert lm["a_step"] == 3.0 and lm["a_epoch"] == pytest.approx(weighted)
    assert lm["d1"] == 30.0 and lm["total"] == 10.0 and lm["from_epoch_end"] == 42.0
    assert "secret" not in lm and not any("secret" in m for _, m in logger.records)
    assert all(isinstance(v, float) for v in lm.values())
    # per step, then once at the epoch's end
    assert logger.steps_with("a_step") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert [m["loss_step"] for _, m in logger.records if "loss_step" in m] == pytest.approx([loss for loss, _ in model.train_losses])
    epoch_records = [(s, m) for s, m in logger.records if "a_epoch" in m]
    assert len(epoch_records) == 1 and epoch_records[0][0] == 3
    assert epoch_records[0][1]["epoch"] == 0


def test_validation_metrics_match_hand_computation(h: Any, make_trainer: Any) -> None:
    model = _Logs()
    val = _uneven_loader()
    trainer = make_trainer(max_epochs=1)
    [metrics] = trainer.validate(model, val, verbose=False)
    x, y = val.dataset.tensors
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(model.layer(x), y).item()  # the weighted mean of batch means
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["val_max"] == pytest.approx(y.max().item())
    assert metrics["val_min"] == pytest.approx(y.min().item())
    assert metrics["val_count"] == 10.0
    assert set(metrics) == {"val_loss", "val_max", "val_min", "val_count"}
    assert float(trainer.callback_metrics["val_loss"]) == pytest.approx(expected, rel=1e-6)


def test_validation_during_fit_reaches_callback_metrics_and_logger(h: Any, make_trainer: Any) -> None:
    logger = h.RecordingLogger()
    trainer = make_trainer(max_epochs=2, logger=logger)
    trainer.fit(_Logs(), _uneven_loader(), _uneven_loader())
    assert float(trainer.callback_metrics["val_count"]) == 10.0
    val_records = [(s, m["epoch"]) for s, m in logger.records if "val_loss" in m]
    assert val_records == [(3, 0), (6, 1)]


def test_progress_bar_metrics(h: Any, make_trainer: Any) -> None:
    seen: list[dict[str, float]] = []

    class Look(ember.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            seen.append(dict(trainer.progress_bar_metrics))

    trainer = make_trainer(max_epochs=1, callbacks=[Look()])
    trainer.fit(_Logs(), _uneven_loader())
    assert seen == [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}]
    assert all(isinstance(v, float) for d in seen for v in d.values())


def test_no_logger_means_nothing_logged_but_callback_metrics_filled(make_trainer: Any) -> None:
    trainer = make_trainer(max_epochs=1, logger=False)
    trainer.fit(_Logs(), _uneven_loader())
    assert trainer.logged_metrics == {}
    assert float(trainer.callback_metrics["a_epoch"]) == pytest.approx(1.8)


def test_two_validation_dataloaders_get_suffixed_keys(h: Any, make_trainer: Any) -> None:
    class Two(_Logs):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("n", float(len(batch[0])), reduce_fx="sum")
            self.log("shared", 1.0, add_dataloader_idx=False)

    trainer = make_trainer(max_epochs=1)
    small = DataLoader(TensorDataset(torch.randn(3, 4), torch.randn(3, 1)), batch_size=2)
    results = trainer.validate(Two(), [_uneven_loader(), small], verbose=False)
    assert results == [{"n/dataloader_idx_0": 10.0, "shared": 1.0}, {"n/dataloader_idx_1": 3.0, "shared": 1.0}]


def test_plain_name_holds_the_epoch_value_after_the_epoch(make_trainer: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    trainer.fit(_Logs(), _uneven_loader())
    assert float(trainer.callback_metrics["a"]) == pytest.approx(1.8)


def test_epoch_aggregates_are_visible_in_on_train_epoch_end(make_trainer: Any) -> None:
    seen: list[float | None] = []

    class Look(ember.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            value = trainer.callback_metrics.get("a_epoch")
            seen.append(None if value is None else float(value))

    class PerEpoch(_Logs):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("a", float(self.current_epoch * 10 + batch_idx), on_step=True, on_epoch=True, batch_size=1)
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    make_trainer(max_epochs=2, callbacks=[Look()]).fit(PerEpoch(), _uneven_loader())
    assert seen == [pytest.approx(1.0), pytest.approx(11.0)]


def test_callback_metrics_are_tensors(make_trainer: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    trainer.fit(_Logs(), _uneven_loader())
    assert all(isinstance(v, torch.Tensor) for v in trainer.callback_metrics.values())
