"""``self.log`` / ``self.log_dict`` with torchmetrics objects, as Lightning
does it: the step value is the metric's ``forward`` result, the epoch value
its ``compute()``, then it is ``reset()``; its state survives a mid-epoch
resume."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember

torchmetrics = pytest.importorskip("torchmetrics", reason="torchmetrics is a test dependency (pip install -e '.[dev]')")


def _values(n: int = 24, batch_size: int = 8) -> DataLoader:
    x = torch.arange(n, dtype=torch.float32)[:, None]
    return DataLoader(TensorDataset(x, x), batch_size=batch_size)


class Summing(ember.Module):
    """Logs a ``SumMetric`` of the inputs, per step and per epoch."""

    def __init__(self, on_step: bool = True, sync_dist: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.total = torchmetrics.SumMetric()
        self.on_step, self.sync_dist = on_step, sync_dist
        self.update_counts_at_epoch_end: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.total(x.sum())
        self.log("total", self.total, on_step=self.on_step, on_epoch=True, sync_dist=self.sync_dist)
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def on_train_epoch_end(self) -> None:
        self.update_counts_at_epoch_end.append(self.total._update_count)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=1e-4)


def test_step_value_is_forward_and_epoch_value_is_compute_then_reset(h: Any, tmp_path: Any) -> None:
    logger = h.RecordingLogger()
    module = Summing()
    h.quiet_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=1).fit(module, _values())
    # forward returns the batch's own sum: 0+..+7, 8+..+15, 16+..+23
    assert [v for _, v in logger.steps_with("total_step")] == [28.0, 92.0, 156.0] * 2
    assert [v for _, v in logger.steps_with("total_epoch")] == [276.0, 276.0]  # compute() over the whole epoch
    # compute() ran after on_train_epoch_end (3 updates), then reset() emptied the state for the next epoch
    assert module.update_counts_at_epoch_end == [3, 3]
    assert module.total._update_count == 0 and float(module.total.sum_value) == 0.0


def test_sync_dist_leaves_the_reduction_to_the_metric(h: Any, tmp_path: Any) -> None:
    trainer = h.quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Summing(on_step=False, sync_dist=True), _values())
    assert float(trainer.callback_metrics["total"]) == 276.0


def test_metric_collection_in_log_dict_and_validate_returns_computed_values(h: Any, tmp_path: Any) -> None:
    class Evaluated(Summing):
        def __init__(self) -> None:
            super().__init__()
            self.metrics = torchmetrics.MetricCollection(
                {"max": torchmetrics.MaxMetric(), "mean": torchmetrics.MeanMetric()}, prefix="val_"
            )

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.metrics.update(batch[0].flatten())
            self.log_dict(self.metrics)

    module = Evaluated()
    (result,) = h.quiet_trainer(tmp_path).validate(module, _values(), verbose=False)
    assert result == {"val_max": 23.0, "val_mean": 11.5}
    assert module.metrics["max"]._update_count == 0  # reset after the run


def test_metric_updated_without_forward_has_no_step_value(h: Any, tmp_path: Any) -> None:
    class UpdateOnly(Summing):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.total.update(batch[0].sum())
            self.log("total", self.total, on_step=True, on_epoch=True)
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    logger = h.RecordingLogger()
    h.quiet_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1).fit(UpdateOnly(), _values())
    assert logger.steps_with("total_step") == []
    assert [v for _, v in logger.steps_with("total_epoch")] == [276.0]


def test_metric_state_survives_a_mid_epoch_resume(h: Any, tmp_path: Any) -> None:
    class SaveAfterTwoBatches(ember.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 1:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    full = h.quiet_trainer(tmp_path, max_epochs=1, callbacks=[SaveAfterTwoBatches()])
    full.fit(Summing(on_step=False), _values())
    assert float(full.callback_metrics["total"]) == 276.0

    resumed_module = Summing(on_step=False)
    resumed = h.quiet_trainer(tmp_path, max_epochs=1)
    resumed.fit(resumed_module, _values(), ckpt_path=str(tmp_path / "mid.ckpt"))
    # only the third batch ran after the restart; the first two come from the checkpoint
    assert resumed_module.update_counts_at_epoch_end == [3]
    assert float(resumed.callback_metrics["total"]) == 276.0


def test_an_unloggable_object_is_named(h: Any, tmp_path: Any) -> None:
    class Bad(Summing):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("weights", self.layer)
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    with pytest.raises(TypeError, match=r"self.log\('weights', ...\) got a Linear; log a number, a scalar tensor or a torchmetrics Metric"):
        h.quiet_trainer(tmp_path, max_epochs=1).fit(Bad(), _values())


class _WritesTotal(Summing):
    """Each process writes the epoch value it got (ddp_spawn workers re-import this module)."""

    def __init__(self, out_dir: str) -> None:
        super().__init__(on_step=False, sync_dist=True)
        self.out_dir = out_dir

    def on_train_end(self) -> None:
        value = float(self.trainer.callback_metrics["total"])
        with open(f"{self.out_dir}/rank{self.global_rank}.txt", "w") as f:
            f.write(f"{value} {self.total._update_count}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_epoch_value_is_computed_over_all_processes(tmp_path: Any) -> None:
    trainer = ember.Trainer(
        strategy="ddp_spawn", devices=2, accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(_WritesTotal(str(tmp_path)), _values(32, batch_size=4))
    # each process saw half the samples; compute() gathered both halves: 0 + 1 + ... + 31
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["496.0 0", "496.0 0"]
