"""ThroughputMonitor and DeviceStatsMonitor: what reaches a recording logger."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.callbacks.device_stats import DeviceStatsMonitor, rss_bytes
from ember.plugins.callbacks.throughput import ThroughputMonitor, infer_batch_size

SLEEP = 0.02


class RecordingLogger(ember.Logger):
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((step, dict(metrics)))

    def values(self, name: str) -> list[tuple[int, float]]:
        return [(step, m[name]) for step, m in self.rows if name in m]


class Sleepy(ember.Callback):
    """Makes every training batch take at least SLEEP seconds."""

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        time.sleep(SLEEP)


def loader(n: int = 64, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)), batch_size=batch_size)


def test_throughput_matches_a_known_step_time(make_trainer, regressor):
    logger = RecordingLogger()
    monitor = ThroughputMonitor(window=4)
    make_trainer(max_epochs=2, log_every_n_steps=4, logger=logger, callbacks=[Sleepy(), monitor]).fit(regressor(), loader(64, 8))
    rows = logger.values("throughput/batches_per_sec")
    # 16 steps; logged at steps 4, 8, 12, 16 (after the step is taken)
    assert [s for s, _ in rows] == [4, 8, 12, 16]
    for _, rate in rows:
        assert 0 < rate <= 1 / SLEEP  # each batch sleeps SLEEP seconds
        assert rate > 0.25 / SLEEP  # ... and does little else
    samples = dict(logger.values("throughput/samples_per_sec"))
    for step, rate in rows:
        assert samples[step] == pytest.approx(8 * rate)  # batch size 8, inferred
    assert monitor.history == [(s, m) for s, m in logger.rows if "throughput/batches_per_sec" in m]


def test_items_per_second_and_custom_batch_size(make_trainer, regressor):
    logger = RecordingLogger()
    monitor = ThroughputMonitor(
        batch_size_fn=lambda batch: len(batch[0]) * 2,  # pretend each row is two samples
        items_fn=lambda batch: (batch[0] > 0).sum(),  # a tensor count: added up without a sync
        item_name="positives",
        window=50,
    )
    make_trainer(max_epochs=1, log_every_n_steps=2, logger=logger, callbacks=[Sleepy(), monitor]).fit(regressor(), loader(32, 8))
    last = [m for _, m in logger.rows if "throughput/batches_per_sec" in m][-1]
    assert set(last) >= {"throughput/batches_per_sec", "throughput/samples_per_sec", "throughput/positives_per_sec"}
    assert last["throughput/samples_per_sec"] == pytest.approx(16 * last["throughput/batches_per_sec"])
    # about half of the 4 features are positive: between 0 and 4 items per sample row
    assert 0 < last["throughput/positives_per_sec"] < 4 * 8 * last["throughput/batches_per_sec"]
    assert isinstance(last["throughput/positives_per_sec"], float)


def test_validation_time_is_not_counted(make_trainer, regressor):
    class SlowValidation(ember.Callback):
        def on_validation_batch_end(self, *args: Any) -> None:
            time.sleep(0.1)

    logger = RecordingLogger()
    monitor = ThroughputMonitor(window=50)
    trainer = make_trainer(max_epochs=2, log_every_n_steps=8, logger=logger, callbacks=[Sleepy(), SlowValidation(), monitor])
    trainer.fit(regressor(), loader(32, 8), loader(16, 8))
    # step 8 is the last batch of epoch 2; the window spans epoch 1's validation (2 x 0.1 s)
    (_, rate), = logger.values("throughput/batches_per_sec")
    assert rate > 0.5 / SLEEP  # with the 0.2 s of validation counted it would be below 8 / (8 * 0.02 + 0.2) = 22/s


def test_infer_batch_size():
    assert infer_batch_size(torch.zeros(5, 3)) == 5
    assert infer_batch_size((torch.zeros(7, 2), torch.zeros(7))) == 7
    assert infer_batch_size({"input_ids": torch.zeros(3, 10), "label": torch.zeros(3)}) == 3
    assert infer_batch_size([[1, 2], [3, 4], [5, 6]]) == 3


@pytest.mark.parametrize(
    "batch",
    [
        [torch.zeros(0), torch.zeros(5)],  # an empty tensor first
        ([torch.zeros(2)], torch.zeros(3)),  # nested before flat: depth first
        {"meta": {"ids": torch.zeros(4)}, "x": torch.zeros(6, 1)},
    ],
)
def test_throughput_counts_the_batch_size_self_log_uses(batch):
    """One batch-size inference: the throughput's samples agree with what
    ``self.log`` weighs epoch means by (ember.results.extract_batch_size)."""
    from ember.results import extract_batch_size

    assert infer_batch_size(batch) == extract_batch_size(batch) > 0


def test_throughput_arguments_are_checked():
    with pytest.raises(ValueError, match="window"):
        ThroughputMonitor(window=0)
    with pytest.raises(ValueError, match="item_name"):
        ThroughputMonitor(items_fn=len, item_name="a/b")


def test_device_stats_logs_rss_at_the_logging_cadence(make_trainer, regressor):
    logger = RecordingLogger()
    monitor = DeviceStatsMonitor()
    make_trainer(max_epochs=1, log_every_n_steps=3, logger=logger, callbacks=[monitor]).fit(regressor(), loader(64, 8))
    rss = logger.values("device_stats/cpu_rss_mb")
    assert [s for s, _ in rss] == [3, 6]
    now_mb = rss_bytes() / 2**20
    for _, mb in rss:
        assert 10 < mb < 10 * now_mb  # a torch process is tens of MB at least
    peak = dict(logger.values("device_stats/cpu_max_rss_mb"))
    for step, mb in rss:
        assert peak[step] >= mb * 0.99
    assert all(v >= 0 for _, v in logger.values("device_stats/cpu_percent"))
    # no CUDA device used on CPU: no CUDA figures
    assert not any(k.startswith("device_stats/cuda") for _, m in logger.rows for k in m)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_stats_logs_cuda_memory(tmp_path, regressor):
    logger = RecordingLogger()
    trainer = ember.Trainer(
        accelerator="cuda", devices=1, max_epochs=1, log_every_n_steps=2, logger=logger, callbacks=[DeviceStatsMonitor(cpu_stats=False)],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )
    trainer.fit(regressor(), loader(32, 8))
    allocated = logger.values("device_stats/cuda_allocated_mb")
    assert allocated and all(v > 0 for _, v in allocated)
    assert logger.values("device_stats/cuda_max_allocated_mb")
    assert not logger.values("device_stats/cpu_rss_mb")


def test_monitors_by_registered_name():
    from ember.plugin_manager import PluginManager

    pm = PluginManager()
    pm.load_builtins()
    registry = pm.build_registry()
    assert isinstance(registry.create("callback", "throughput_monitor", window=10), ThroughputMonitor)
    assert isinstance(registry.create("callback", "device_stats_monitor", cpu_stats=True), DeviceStatsMonitor)
