"""The cheap per-step ``self.log`` path (issue 15): step values are stored as
given and converted on first read, epoch values are detached when logged, a
constant batch size folds without a weight tensor, and ``log_dict`` goes
straight to the results. Every test checks what a reader gets, so a change
that leaks a graph or changes a value fails here."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.results import _FOLD_EVERY, Results


def _log(results: Results, name: str, value: Any, **kw: Any) -> None:
    args: dict[str, Any] = dict(
        prog_bar=False, logger=None, on_step=None, on_epoch=None, reduce_fx="mean",
        enable_graph=False, sync_dist=False, add_dataloader_idx=True, batch_size=None,
    )  # fmt: skip
    args.update(kw)
    results.log(name, value, **args)


def _graph_value() -> torch.Tensor:
    w = torch.ones(3, requires_grad=True)
    return (w * 2).sum()


def test_step_values_reach_readers_detached() -> None:
    r = Results(default_on_step=True, default_on_epoch=False)
    r.new_batch(torch.zeros(4, 1))
    loss = _graph_value()
    _log(r, "loss", loss, prog_bar=True)
    for read in (r.step_values(only_fresh=False), r.live_metrics(), r.progress_bar_metrics()):
        value = read["loss"]
        assert isinstance(value, torch.Tensor) and not value.requires_grad and value.grad_fn is None
        assert value.item() == 6.0
    saved = r.state_dict()["entries"]["loss"]["last"]
    assert saved.grad_fn is None


def test_enable_graph_keeps_the_graph_for_readers() -> None:
    r = Results(default_on_step=True, default_on_epoch=False)
    loss = _graph_value()
    _log(r, "loss", loss, enable_graph=True)
    assert r.live_metrics()["loss"] is loss and loss.requires_grad


def test_epoch_values_are_detached_when_logged() -> None:
    r = Results(default_on_step=True, default_on_epoch=False)
    r.new_batch(torch.zeros(4, 1))
    _log(r, "loss", _graph_value(), on_epoch=True)
    entry = r.entries["loss"]
    assert entry.values == [6.0]  # a CPU value waits as a number: nothing in the epoch list holds a graph
    callback, _ = r.finalize_epoch()
    assert callback["loss_epoch"].item() == 6.0 and callback["loss_epoch"].grad_fn is None


def test_numbers_become_tensors_when_read() -> None:
    r = Results(default_on_step=True, default_on_epoch=False)
    _log(r, "lr", 0.5)
    _log(r, "count", 3)
    _log(r, "flag", True)
    values = r.step_values()
    assert {k: (type(v), v.item()) for k, v in values.items()} == {
        "lr": (torch.Tensor, 0.5),
        "count": (torch.Tensor, 3.0),
        "flag": (torch.Tensor, 1.0),
    }
    assert values["lr"].dtype == torch.get_default_dtype()
    assert r.step_values() == {}  # no longer fresh


@pytest.mark.parametrize("sizes", [[8] * (2 * _FOLD_EVERY + 5), [8, 8, 3] * 200])
def test_fold_matches_the_weighted_mean(sizes: list[int]) -> None:
    """One batch size throughout (the shortcut) and mixed sizes give the same
    weighted mean as computing it by hand in float64."""
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(len(sizes), generator=gen)
    r = Results(default_on_step=False, default_on_epoch=True)
    for size, value in zip(sizes, values, strict=True):
        r.new_batch(torch.zeros(size, 2))
        _log(r, "m", value)
    callback, _ = r.finalize_epoch()
    expected = sum(float(v) * s for v, s in zip(values, sizes, strict=True)) / sum(sizes)
    assert callback["m"].item() == pytest.approx(expected, rel=1e-5)


def test_uniform_fold_is_bitwise_the_general_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    values = torch.rand(_FOLD_EVERY, generator=gen)
    r = Results(default_on_step=False, default_on_epoch=True)
    for value in values:
        _log(r, "m", value, batch_size=16)
    r.entries["m"].fold()
    general = (values * torch.full((_FOLD_EVERY,), 16.0)).sum(0)
    assert torch.equal(r.entries["m"].folded, general)


class _DictLogger(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log_dict({"loss": loss, "idx": float(batch_idx), "twice": loss * 2}, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _OverridesLog(_DictLogger):
    """A module overriding ``log`` still sees every ``log_dict`` item."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        self.seen.append(name)
        super().log(name, value, *args, **kwargs)


def _loader() -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(12, 3, generator=gen), torch.randn(12, 1, generator=gen)), batch_size=4)


def test_log_dict_in_a_real_fit(make_trainer: Any) -> None:
    model = _DictLogger()
    trainer = make_trainer(max_epochs=1, logger=False)
    trainer.fit(model, _loader())
    cm = trainer.callback_metrics
    assert float(cm["idx_step"]) == 2.0 and float(cm["idx_epoch"]) == pytest.approx(1.0)
    assert float(cm["twice_epoch"]) == pytest.approx(2 * float(cm["loss_epoch"]))
    assert all(v.grad_fn is None for v in cm.values())


def test_log_dict_goes_through_an_overridden_log(make_trainer: Any) -> None:
    model = _OverridesLog()
    make_trainer(max_epochs=1, logger=False).fit(model, _loader())
    assert model.seen == ["loss", "idx", "twice"] * 3


def test_cpu_epoch_values_wait_as_numbers() -> None:
    """A CPU value kept for the epoch is a Python number: no tensor, no
    storage and no graph stays alive for up to ``_FOLD_EVERY`` steps (kept
    tensors slowed the next backward pass by about 4 us per step), and the
    epoch value is bitwise what stacking the tensors gives."""
    r = Results(default_on_step=True, default_on_epoch=False)
    losses = [(_graph_value() * (i + 1) / 7) for i in range(5)]
    for loss in losses:
        r.new_batch((torch.zeros(4, 1), torch.zeros(4)))
        _log(r, "loss", loss, on_epoch=True)
    entry = r.entries["loss"]
    assert all(type(v) is float for v in entry.values) and entry.weights == [4] * 5
    assert entry.last is losses[-1]  # the step value: as given, detached when read
    expected = (torch.stack([v.detach() for v in losses]) * 4).sum(0) / 20
    callback, _ = r.finalize_epoch()
    assert torch.equal(callback["loss_epoch"], expected) and callback["loss_epoch"].dtype == torch.float32


def test_float64_values_reduce_in_float64_through_a_resume() -> None:
    values = torch.rand(7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r = Results(default_on_step=False, default_on_epoch=True)
    for i, v in enumerate(values):
        if i == 4:
            saved = r.state_dict()
            r = Results(default_on_step=False, default_on_epoch=True)
            r.load_state_dict(saved)
        r.new_batch(torch.zeros(2, 1))
        _log(r, "x", v)
    callback, _ = r.finalize_epoch()
    assert callback["x"].dtype == torch.float64
    assert torch.equal(callback["x"], (values * 2).sum(0) / 14)


def test_values_off_the_cpu_wait_as_graph_free_tensors() -> None:
    """Off the CPU (here the meta device) reading a number would be a device
    sync: the value waits as a tensor without its graph instead."""
    w = torch.ones(3, device="meta", requires_grad=True)
    r = Results(default_on_step=True, default_on_epoch=False)
    r.new_batch(torch.zeros(4, 1))
    _log(r, "loss", (w * 2).sum(), on_epoch=True)
    kept = r.entries["loss"].values[-1]
    assert isinstance(kept, torch.Tensor) and kept.is_meta and kept.grad_fn is None and not kept.requires_grad
    callback, _ = r.finalize_epoch()
    assert callback["loss_epoch"].is_meta


def test_a_cpu_epoch_value_is_a_snapshot() -> None:
    """A tensor updated in place after it was logged (a running counter)
    does not change what was logged for the epoch."""
    counter = torch.zeros(())
    r = Results(default_on_step=False, default_on_epoch=True)
    for _ in range(3):
        counter += 1
        r.new_batch(torch.zeros(2, 1))
        _log(r, "count", counter, reduce_fx="sum")
    callback, _ = r.finalize_epoch()
    assert callback["count"].item() == 6.0  # 1 + 2 + 3, not 3 + 3 + 3


def test_an_epoch_value_off_the_cpu_without_a_graph_waits_as_a_copy() -> None:
    """Off the CPU a running total updated in place would change what was
    logged if the tensor itself waited: it waits as a copy (on the meta
    device here; a CUDA tensor takes the same branch)."""
    counter = torch.zeros((), device="meta")
    r = Results(default_on_step=False, default_on_epoch=True)
    r.new_batch(torch.zeros(2, 1))
    _log(r, "count", counter, reduce_fx="sum")
    kept = r.entries["count"].values[-1]
    assert isinstance(kept, torch.Tensor) and kept is not counter and not kept._is_view() and kept.is_meta
