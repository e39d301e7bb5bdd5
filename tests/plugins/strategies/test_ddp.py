"""``ddp`` / ``ddp_spawn`` with real processes on gloo (2 CPU processes).

The modules used by spawned workers live at the top of this file: the spawn
start method re-imports them by name in each worker.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import textwrap
import time
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, regression_data, run_torchrun  # noqa: E402
from strategy_helpers import Regressor as PlainRegressor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

import ember
from ember.plugins.checkpoint_io.torch_io import TorchCheckpointIO
from ember.plugins.strategies.ddp import DDPSpawnStrategy, DDPStrategy, DDPWorkerError

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


class Regressor(PlainRegressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, on_epoch=True, sync_dist=True)
        return loss


class ManualRegressor(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss


class IndexData(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(i), torch.ones(2)


class IndexRecorder(ember.Module):
    """Writes the dataset indices each rank saw, per epoch, to ``out_dir``."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.out_dir = out_dir
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        idx, x = batch
        self.seen.setdefault(self.current_epoch, []).extend(idx.tolist())
        return self.layer(x).sum()

    def on_train_end(self) -> None:
        with open(os.path.join(self.out_dir, f"rank{self.global_rank}.json"), "w") as f:
            json.dump(self.seen, f)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class RankLogger(Regressor):
    """Logs its rank: the epoch mean across ranks is 0.5 with sync_dist, 0 (rank zero's) without."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.log("rank_synced", float(self.global_rank), on_step=False, on_epoch=True, sync_dist=True)
        self.log("rank_local", float(self.global_rank), on_step=False, on_epoch=True)
        self.log("rank_max", float(self.global_rank), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")
        return super().training_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_rank", float(self.global_rank), sync_dist=True)


class RecordingIO(TorchCheckpointIO):
    """Checkpoint IO that notes which rank wrote each file."""

    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        with open(os.path.join(self.record_dir, f"saved-by-rank{os.environ.get('RANK', '?')}-{time.monotonic_ns()}"), "w") as f:
            f.write(path)
        super().save_checkpoint(checkpoint, path)


class FailsOnRankOne(Regressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_rank == 1 and batch_idx == 2:
            raise ValueError("rank one cannot go on")
        return super().training_step(batch, batch_idx)


def single_process_weights(epochs: int, global_batch: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    module = Regressor()
    ember.Trainer(devices=1, max_epochs=epochs, **QUIET).fit(module, DataLoader(regression_data(), batch_size=global_batch))
    return module.state_dict()


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- (a) spawn == one process on the global batch


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp"])
def test_two_processes_match_one_process_on_the_global_batch(strategy: str, no_launcher_env: None) -> None:
    expected = single_process_weights(epochs=2, global_batch=16)
    torch.manual_seed(3)
    module = Regressor()
    trainer = ember.Trainer(strategy=strategy, devices=2, max_epochs=2, **QUIET)
    assert trainer.strategy.launcher.should_launch()  # strategy="ddp" with no launcher env starts the processes itself
    trainer.fit(module, DataLoader(regression_data(), batch_size=8))
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0)
    assert trainer.global_step == 8  # 64 samples / 2 ranks / 8 per batch = 4 steps per epoch
    assert trainer.current_epoch == 2
    assert set(trainer.callback_metrics) >= {"train_loss", "train_loss_epoch"}
    assert trainer.state.status == "finished"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_manual_optimization_averages_gradients_too(no_launcher_env: None) -> None:
    expected = single_process_weights(epochs=1, global_batch=16)
    torch.manual_seed(3)
    module = ManualRegressor()
    ember.Trainer(strategy="ddp_spawn", devices=2, max_epochs=1, **QUIET).fit(module, DataLoader(regression_data(), batch_size=8))
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- (b) the same via torchrun

TORCHRUN_SCRIPT = """
import sys
import torch
from torch.utils.data import DataLoader
import ember
sys.path.insert(0, {test_dir!r})
from test_ddp import QUIET, Regressor, regression_data

torch.manual_seed(3)
module = Regressor()
trainer = ember.Trainer(strategy="ddp", devices=2, max_epochs=2, **QUIET)
assert not trainer.strategy.launcher.should_launch()
trainer.fit(module, DataLoader(regression_data(), batch_size=8))
assert trainer.world_size == 2 and trainer.strategy.environment.name == "torchelastic", trainer.strategy.environment.name
if trainer.is_global_zero:
    torch.save(module.state_dict(), {out!r})
print("rank", trainer.global_rank, "done", trainer.global_step)
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_torchrun_matches_one_process(tmp_path: Any) -> None:
    out = str(tmp_path / "weights.pt")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT.format(test_dir=os.path.dirname(__file__), out=out)))
    proc = run_torchrun(script, tmp_path, timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 done 8" in proc.stdout and "rank 1 done 8" in proc.stdout
    expected = single_process_weights(epochs=2, global_batch=16)
    got = torch.load(out)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- (c) the distributed sampler


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_shuffled_loader_is_split_disjointly_and_reshuffled_each_epoch(tmp_path: Any, no_launcher_env: None) -> None:
    ember.seed_everything(11)
    trainer = ember.Trainer(strategy="ddp_spawn", devices=2, max_epochs=2, **QUIET)
    trainer.fit(IndexRecorder(str(tmp_path)), DataLoader(IndexData(20), batch_size=5, shuffle=True))
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1"):
        r0, r1 = seen[0][epoch], seen[1][epoch]
        assert len(r0) == len(r1) == 10
        assert not set(r0) & set(r1)
        assert sorted(r0 + r1) == list(range(20))
    assert seen[0]["0"] != seen[0]["1"]  # a new order every epoch
    assert seen[0]["0"] != sorted(seen[0]["0"])  # and shuffled at all


def _rank_loader(loader: DataLoader, rank: int, seed: int, epoch: int = 0) -> list[int]:
    strategy = DDPStrategy(devices=2)
    strategy._ranks = (rank, rank, 0, 2)
    os.environ["EMBER_GLOBAL_SEED"] = str(seed)
    processed = strategy.process_dataloader(loader, "fit")
    assert isinstance(processed.sampler, DistributedSampler)
    processed.sampler.set_epoch(epoch)
    return [int(i) for batch, _ in processed for i in batch]


def test_same_seed_same_order_on_every_rank_and_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_GLOBAL_SEED", "0")
    shuffled = DataLoader(IndexData(20), batch_size=5, shuffle=True)
    first = [_rank_loader(shuffled, r, seed=5) for r in (0, 1)]
    again = [_rank_loader(shuffled, r, seed=5) for r in (0, 1)]
    other_seed = [_rank_loader(shuffled, r, seed=6) for r in (0, 1)]
    assert first == again
    assert first != other_seed
    assert sorted(first[0] + first[1]) == list(range(20))
    assert _rank_loader(shuffled, 0, seed=5, epoch=1) != first[0]


def test_sequential_loader_stays_sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_GLOBAL_SEED", "0")
    loader = DataLoader(IndexData(8), batch_size=2, num_workers=0, drop_last=True)
    assert _rank_loader(loader, 0, seed=1) == [0, 2, 4, 6]
    assert _rank_loader(loader, 1, seed=1) == [1, 3, 5, 7]
    strategy = DDPStrategy(devices=2)
    strategy._ranks = (0, 0, 0, 2)
    processed = strategy.process_dataloader(loader, "fit")
    assert processed.batch_size == 2 and processed.drop_last and not processed.sampler.shuffle


def test_custom_samplers_and_iterables_are_left_alone() -> None:
    strategy = DDPStrategy(devices=2)
    strategy._ranks = (0, 0, 0, 2)
    weighted = DataLoader(IndexData(8), sampler=torch.utils.data.WeightedRandomSampler([1.0] * 8, 8))
    with pytest.warns(UserWarning, match="WeightedRandomSampler"):
        assert strategy.process_dataloader(weighted, "fit") is weighted
    with _no_warnings():  # once per kind of sampler
        assert strategy.process_dataloader(weighted, "fit") is weighted

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(range(4))

    stream = DataLoader(Stream(), batch_size=2)
    assert strategy.process_dataloader(stream, "fit") is stream
    opted_out = DDPStrategy(devices=2, use_distributed_sampler=False)
    opted_out._ranks = (0, 0, 0, 2)
    plain = DataLoader(IndexData(8))
    assert opted_out.process_dataloader(plain, "fit") is plain
    assert isinstance(plain.sampler, SequentialSampler)
    assert isinstance(DataLoader(IndexData(8), shuffle=True).sampler, RandomSampler)


class _no_warnings:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


# --------------------------------------------------------------------------- (d) sync_dist, loggers, checkpoints


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sync_dist_means_across_ranks_and_rank_zero_writes(tmp_path: Any, no_launcher_env: None) -> None:
    from ember.plugins.callbacks.model_checkpoint import ModelCheckpoint
    from ember.plugins.loggers.csv_logger import CSVLogger

    records = tmp_path / "records"
    records.mkdir()
    trainer = ember.Trainer(
        strategy="ddp_spawn",
        devices=2,
        max_epochs=2,
        default_root_dir=tmp_path,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=CSVLogger(save_dir=str(tmp_path / "logs")),
        callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "ckpts"), save_last=True)],
        plugins=[RecordingIO(str(records))],
        log_every_n_steps=1,
    )
    module = RankLogger()
    trainer.fit(module, DataLoader(regression_data(), batch_size=8))
    metrics = trainer.callback_metrics
    assert float(metrics["rank_synced"]) == pytest.approx(0.5)
    assert float(metrics["rank_local"]) == 0.0  # not synced: rank zero's own value
    assert float(metrics["rank_max"]) == 1.0
    # Checkpoints: written by rank zero only, and the callback's state came back.
    written = os.listdir(records)
    assert written and all(n.startswith("saved-by-rank0-") for n in written), written
    assert trainer.checkpoint_callback.last_model_path.endswith("last.ckpt")
    saved = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=False)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(saved["state_dict"][name], value)
    # Loggers: one version directory, each step logged once.
    metric_files = glob.glob(str(tmp_path / "logs" / "**" / "metrics.csv"), recursive=True)
    assert len(metric_files) == 1, metric_files
    with open(metric_files[0]) as f:
        rows = list(csv.DictReader(f))
    steps = [r["step"] for r in rows if r.get("train_loss_step")]
    assert steps and len(steps) == len(set(steps))
    # A later stage spawns again and returns rank zero's synced metrics.
    results = trainer.test(module, DataLoader(regression_data(16), batch_size=4))
    assert results[0]["test_rank"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- (e) a failing rank


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_failing_rank_brings_the_job_down_with_its_error(no_launcher_env: None) -> None:
    trainer = ember.Trainer(strategy="ddp_spawn", devices=2, max_epochs=3, **QUIET)
    started = time.monotonic()
    with pytest.raises(DDPWorkerError, match=r"rank 1 \(of 2\) failed with ValueError: rank one cannot go on") as info:
        trainer.fit(FailsOnRankOne(), DataLoader(regression_data(), batch_size=8))
    assert time.monotonic() - started < 50
    assert isinstance(info.value.__cause__, ValueError)
    assert "Traceback in rank 1" in str(info.value)


# --------------------------------------------------------------------------- configuration without processes


def test_registry_and_object_configuration(no_launcher_env: None) -> None:
    trainer = ember.Trainer(strategy="ddp", devices=2, **QUIET)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy.use_distributed_sampler
    assert trainer.world_size == 2 and trainer.global_rank == 0 and trainer.is_global_zero
    auto = ember.Trainer(devices=2, **QUIET)  # strategy="auto" with several devices
    assert auto.strategy.name == "ddp"
    assert isinstance(ember.Trainer(strategy="ddp_spawn", devices=2, **QUIET).strategy, DDPSpawnStrategy)
    obj = DDPStrategy(devices=2, use_distributed_sampler=False, find_unused_parameters=True)
    trainer = ember.Trainer(strategy=obj, **QUIET)
    assert trainer.strategy is obj and obj.accelerator is not None and obj.environment.name == "local"
    assert obj.ddp_kwargs == {"find_unused_parameters": True}
    assert obj.launcher.should_launch() and obj.world_size == 2
    registry = trainer._registry
    made = registry.create(
        "strategy",
        "ddp",
        accelerator=obj.accelerator,
        precision=obj.precision,
        checkpoint_io=obj.checkpoint_io,
        environment=obj.environment,
        devices=[torch.device("cpu")] * 2,
        num_nodes=1,
        use_distributed_sampler=False,
    )
    assert made.use_distributed_sampler is False
    with pytest.raises(ValueError, match="devices=N"):
        _ = DDPStrategy(environment=obj.environment).num_processes


def test_torchrun_environment_means_no_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29555")
    trainer = ember.Trainer(strategy="ddp", devices=2, **QUIET)
    assert trainer.strategy.environment.name == "torchelastic"
    assert not trainer.strategy.launcher.should_launch()
    assert trainer.global_rank == 1 and trainer.world_size == 2 and not trainer.is_global_zero
