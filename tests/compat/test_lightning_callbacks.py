"""The callbacks ``ember.callbacks`` adds under Lightning's names, each in a
real (tiny) run; weight averaging is compared with Lightning's bit for bit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import callbacks as cbs


def _data(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _body(base: type) -> type:
    class Net(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.losses: list[float] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.losses.append(float(torch.nn.functional.mse_loss(self(x), y)))

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return self(batch[0])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Net


Net = _body(ember.Module)


def _trainer(tmp_path: Path, **kwargs: Any) -> ember.Trainer:
    base = dict(
        default_root_dir=str(tmp_path), max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return ember.Trainer(**{**base, **kwargs})


def _loader(n: int = 32, bs: int = 8) -> DataLoader:
    return DataLoader(_data(n), batch_size=bs)


def test_lambda_callback_registers_only_what_it_is_given(tmp_path: Path) -> None:
    seen: list[str] = []
    cb = cbs.LambdaCallback(on_train_epoch_end=lambda trainer, module: seen.append(f"epoch {trainer.current_epoch}"))
    assert type(cb).on_train_batch_end is ember.Callback.on_train_batch_end  # nothing per step
    _trainer(tmp_path, max_epochs=2, callbacks=[cb]).fit(Net(), _loader())
    assert seen == ["epoch 0", "epoch 1"]
    with pytest.raises(TypeError, match="on_train_epoch_ends"):
        cbs.LambdaCallback(on_train_epoch_ends=print)


def test_timer_stops_training_and_measures(tmp_path: Path) -> None:
    class Slow(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            time.sleep(0.02)
            return super().training_step(batch, batch_idx)

    timer = cbs.Timer(duration={"seconds": 0.05}, verbose=False)
    trainer = _trainer(tmp_path, max_epochs=100, callbacks=[timer])
    trainer.fit(Slow(), _loader())
    assert trainer.global_step < 20 and timer.time_elapsed("train") >= 0.05
    assert timer.time_remaining() <= 0 and timer.start_time() is not None and timer.end_time() is not None
    restored = cbs.Timer(duration="00:00:01:00")
    restored.load_state_dict(timer.state_dict())
    assert restored.time_elapsed("train") == pytest.approx(timer.time_elapsed("train"))


def test_on_exception_checkpoint(tmp_path: Path) -> None:
    class Boom(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.global_step == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    cb = cbs.OnExceptionCheckpoint(dirpath=tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, callbacks=[cb]).fit(Boom(), _loader())
    assert torch.load(cb.ckpt_path, weights_only=True)["global_step"] == 2


def test_prediction_writer(tmp_path: Path) -> None:
    class Writer(cbs.BasePredictionWriter):
        def __init__(self) -> None:
            super().__init__(write_interval="batch_and_epoch")
            self.batches: list[tuple[Any, ...]] = []
            self.epoch: Any = None

        def write_on_batch_end(self, trainer, module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:  # type: ignore[no-untyped-def]
            self.batches.append((prediction.shape[0], batch_indices, batch_idx, dataloader_idx))

        def write_on_epoch_end(self, trainer, module, predictions, batch_indices) -> None:  # type: ignore[no-untyped-def]
            self.epoch = (len(predictions), batch_indices)

    writer = Writer()
    _trainer(tmp_path, callbacks=[writer]).predict(Net(), DataLoader(_data(10), batch_size=4))
    assert writer.batches == [(4, [0, 1, 2, 3], 0, 0), (4, [4, 5, 6, 7], 1, 0), (2, [8, 9], 2, 0)]
    assert writer.epoch == (3, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])


def test_gradient_accumulation_scheduler(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[cbs.GradientAccumulationScheduler({1: 2, 2: 4})])
    steps: list[int] = []
    trainer.fit(Net(), _loader(32, 4))  # 8 batches per epoch
    assert trainer.global_step == 8 + 4 + 2
    del steps


def _fit_both(tmp_path: Path, make_cb: Any, pl: Any, epochs: int = 3) -> tuple[torch.nn.Module, torch.nn.Module]:
    models = []
    for name, base, trainer_cls, cb in (
        ("ember", ember.Module, ember.Trainer, make_cb(cbs)),
        ("lightning", pl.LightningModule, pl.Trainer, make_cb(pl.callbacks)),
    ):
        torch.manual_seed(0)
        model = _body(base)()
        trainer = trainer_cls(
            default_root_dir=str(tmp_path / name), max_epochs=epochs, logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, callbacks=[cb],
            accelerator="cpu", devices=1,
        )  # fmt: skip
        trainer.fit(model, _loader(), _loader(16))
        models.append(model)
    return models[0], models[1]


def test_ema_weight_averaging_matches_lightning(tmp_path: Path) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    ours, theirs = _fit_both(tmp_path, lambda ns: ns.EMAWeightAveraging(decay=0.9, update_starting_at_step=2), pl)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert ours.losses == theirs.losses  # validation ran on the averaged weights in both


def test_weight_averaging_checkpoint_holds_the_average_and_resumes(tmp_path: Path) -> None:
    avg = cbs.EMAWeightAveraging(decay=0.5)
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[avg])
    model = Net()
    trainer.fit(model, _loader())
    trainer.save_checkpoint(tmp_path / "w.ckpt")  # after fit: the module holds the average already
    ckpt = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert torch.equal(ckpt["state_dict"]["layer.weight"], model.layer.weight)
    # Mid-fit checkpoint: the average in state_dict, the trained weights kept aside.
    avg2 = cbs.EMAWeightAveraging(decay=0.5)
    saver = cbs.LambdaCallback(on_train_epoch_end=lambda t, m: t.save_checkpoint(tmp_path / "mid.ckpt"))
    _trainer(tmp_path, max_epochs=1, callbacks=[avg2, saver]).fit(Net(), _loader())
    mid = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    assert "current_model_state" in mid and "averaging_state" in mid
    assert not torch.equal(mid["state_dict"]["layer.weight"], mid["current_model_state"]["layer.weight"])
    resumed = cbs.EMAWeightAveraging(decay=0.5)
    _trainer(tmp_path, max_epochs=2, callbacks=[resumed]).fit(Net(), _loader(), ckpt_path=str(tmp_path / "mid.ckpt"))
    assert resumed._average_model is not None and int(resumed._average_model.n_averaged) > 4


def test_stochastic_weight_averaging(tmp_path: Path) -> None:
    swa = cbs.StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2, annealing_epochs=1)
    ends: list[torch.Tensor] = []
    keep = cbs.LambdaCallback(on_train_epoch_end=lambda t, m: ends.append(m.layer.weight.detach().clone()))
    model = Net()
    trainer = _trainer(tmp_path, max_epochs=4, callbacks=[keep, swa])
    trainer.fit(model, _loader())
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)
    torch.testing.assert_close(model.layer.weight, torch.stack(ends[2:]).mean(0))  # mean of epochs 2 and 3


def test_model_pruning(tmp_path: Path) -> None:
    model = Net()
    _trainer(tmp_path, max_epochs=2, callbacks=[cbs.ModelPruning("l1_unstructured", amount=0.25, use_lottery_ticket_hypothesis=False)]).fit(
        model, _loader()
    )
    zeros = int((model.layer.weight == 0).sum() + (model.layer.bias == 0).sum())
    assert zeros == 2  # global over weight and bias: 25 % of 5 (1), then 25 % of the 4 left (1); masks folded in
    assert not hasattr(model.layer, "weight_orig")  # make_pruning_permanent
    with pytest.raises(ValueError, match="pruning_dim"):
        cbs.ModelPruning("ln_structured")


def test_spike_detection(tmp_path: Path) -> None:
    class Spiky(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            return loss * 1000 if batch_idx == 3 else loss

    detector = cbs.SpikeDetection(window=3, warmup=2, rtol=2.0)
    with pytest.raises(RuntimeError, match="spike detected in batch 3"):
        _trainer(tmp_path, callbacks=[detector]).fit(Spiky(), _loader(48, 4))
    assert json.loads((tmp_path / "skip_batches.json").read_text()) == [3]


def test_progress_bars_and_rich_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich")
    for bar in (cbs.TQDMProgressBar(refresh_rate=2), cbs.RichProgressBar(refresh_rate=1)):
        trainer = _trainer(tmp_path, callbacks=[bar, cbs.RichModelSummary(max_depth=1)], enable_progress_bar=True)
        trainer.fit(Net(), _loader(), _loader(16))
        assert trainer.progress_bar_callback is bar
    assert "Linear" in capsys.readouterr().out


def test_checkpoint_options(tmp_path: Path) -> None:
    import datetime

    class Boom(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.current_epoch == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    ckpt = cbs.ModelCheckpoint(dirpath=tmp_path / "a", save_on_exception=True, enable_version_counter=False)
    with pytest.raises(RuntimeError):
        _trainer(tmp_path, max_epochs=2, callbacks=[ckpt], enable_checkpointing=True).fit(Boom(), _loader())
    assert sorted(p.name for p in (tmp_path / "a").glob("*.ckpt")) == ["epoch=0-step=4.ckpt", "epoch=1-step=4-exception.ckpt"]

    timed = cbs.ModelCheckpoint(dirpath=tmp_path / "b", train_time_interval=datetime.timedelta(seconds=0), save_top_k=-1)
    _trainer(tmp_path, callbacks=[timed], enable_checkpointing=True).fit(Net(), _loader())
    assert len(list((tmp_path / "b").glob("*step=*.ckpt"))) >= 4  # after every step


def test_early_stopping_log_rank_zero_only_and_lr_finder_attr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Tuned(Net):
        def __init__(self) -> None:
            super().__init__()
            self.learning_rate = 0.05

    finder = cbs.LearningRateFinder(num_training_steps=5, early_stop_threshold=None)
    _trainer(tmp_path, max_epochs=1, callbacks=[finder, cbs.EarlyStopping("val_loss_missing", strict=False, verbose=True, log_rank_zero_only=True)]).fit(
        Tuned(), _loader(), _loader(16)
    )
    assert finder.attr_name == "learning_rate"  # found by itself, as Lightning's attr_name=""
    assert cbs.EarlyStopping("x").log_rank_zero_only is False


def test_throughput_length_fn_and_device_stats_default(tmp_path: Path) -> None:
    monitor = cbs.ThroughputMonitor(length_fn=lambda batch: batch[0].numel(), window=2)
    stats = cbs.DeviceStatsMonitor()
    assert stats.cpu_stats is None

    class Rec(ember.Logger):
        rows: list[dict[str, float]] = []

        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            self.rows.append(metrics)

    _trainer(tmp_path, callbacks=[monitor, stats], logger=Rec(), log_every_n_steps=2).fit(Net(), _loader())
    keys = set().union(*Rec.rows)
    assert "throughput/items_per_sec" in keys and any(k.startswith("device_stats/cpu") for k in keys)  # CPU run: CPU stats
