"""Resuming inside an epoch with another batch size or number of processes
continues at the exact sample, or refuses with both settings named; it never
skips or repeats data silently.

Every run records the sample indices each process trained on. A run that
stops (saves, then crashes) after some steps and a resumed run together must
see each of the 24 samples of the epoch exactly once. Before the fix the
resumed run skipped the saved number of *batches* of its own size: from 2
processes x batch 2 to 1 process x batch 2 it skipped 6 samples instead of 12
and trained on 6 of them twice; with a larger batch it skipped data.

The module and callback live at the top of this file: spawned workers
re-import them by name.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from strategy_helpers import Crash, SaveThenCrash
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.loops.data_position import ResumeMismatchError
from ember.testing import quiet_trainer

N = 24


class IndexRecorder(ember.Module):
    """Appends the indices of every training batch to ``<out>/<tag>-rank<r>.txt``."""

    def __init__(self, out: str, tag: str) -> None:
        super().__init__()
        self.out, self.tag = out, tag
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        with open(os.path.join(self.out, f"{self.tag}-rank{self.trainer.global_rank}.txt"), "a") as f:
            f.write("".join(f"{int(i)}\n" for i in x))
        return ((self.weight - x.float()) ** 2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.001)


def loader(batch_size: int, shuffle: bool) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(N)), batch_size=batch_size, shuffle=shuffle)


def trainer(root: Path, callbacks: list[Any] | None = None, **kwargs: Any) -> ember.Trainer:
    return quiet_trainer(root, callbacks=callbacks or [], **{"accelerator": "cpu", "num_sanity_val_steps": 0, **kwargs})


def seen(out: Path) -> Counter[int]:
    counts: Counter[int] = Counter()
    for name in os.listdir(out):
        counts.update(int(line) for line in (out / name).read_text().split())
    return counts


def assert_each_sample_once(out: Path) -> None:
    counts = seen(out)
    repeated = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(set(range(N)) - set(counts))
    assert not repeated and not missing, f"repeated {repeated}, skipped {missing}"


# --------------------------------------------------------------------------- one process, another batch size (fast)


@pytest.mark.parametrize("shuffle", [False, True], ids=["sequential", "shuffled"])
def test_one_process_continues_at_the_sample_with_another_batch_size(tmp_path: Path, shuffle: bool) -> None:
    out, ckpt = tmp_path / "seen", str(tmp_path / "mid.ckpt")
    out.mkdir()
    ember.seed_everything(3)
    with pytest.raises(Crash):
        trainer(tmp_path, [SaveThenCrash(ckpt, at_step=3)]).fit(IndexRecorder(str(out), "first"), loader(4, shuffle))
    data = torch.load(ckpt, weights_only=True)["loops"]["fit"]["data"]
    assert data["samples_done"] == 12 and data["global_batch_size"] == 4 and data["world_size"] == 1

    ember.seed_everything(99)  # a relaunch need not share the seed
    resumed = trainer(tmp_path)
    resumed.fit(IndexRecorder(str(out), "resumed"), loader(6, shuffle), ckpt_path=ckpt)  # 12 = 2 batches of 6
    assert_each_sample_once(out)
    assert resumed.global_step == 3 + 2


def test_one_process_refuses_a_batch_size_with_no_boundary_at_the_sample(tmp_path: Path) -> None:
    out, ckpt = tmp_path / "seen", str(tmp_path / "mid.ckpt")
    out.mkdir()
    with pytest.raises(Crash):
        trainer(tmp_path, [SaveThenCrash(ckpt, at_step=3)]).fit(IndexRecorder(str(out), "first"), loader(4, False))
    with pytest.raises(ResumeMismatchError) as info:
        trainer(tmp_path).fit(IndexRecorder(str(out), "resumed"), loader(5, False), ckpt_path=ckpt)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "after 12 samples" in message and "global batch 4" in message and "global batch 5" in message, message
    assert "12 is not a multiple of 5" in message
    assert not (out / "resumed-rank0.txt").exists()  # refused before training on anything


# --------------------------------------------------------------------------- two processes -> one (real processes)


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def two_process_checkpoint(tmp_path: Path, out: Path, shuffle: bool) -> str:
    """2 processes x batch 2 (global 4), stopped after 3 steps: 12 samples done."""
    from ember.plugins.strategies.ddp import DDPWorkerError

    ckpt = str(tmp_path / "mid.ckpt")
    ember.seed_everything(5)
    with pytest.raises(DDPWorkerError, match="planned crash"):
        trainer(tmp_path, [SaveThenCrash(ckpt, at_step=3)], strategy="ddp_spawn", devices=2).fit(
            IndexRecorder(str(out), "first"), loader(2, shuffle)
        )
    data = torch.load(ckpt, weights_only=True)["loops"]["fit"]["data"]
    assert (data["samples_done"], data["global_batch_size"], data["world_size"], data["replicas"]) == (12, 4, 2, 2)
    assert sum(seen(out).values()) == 12
    return ckpt


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore:The checkpoint was written by 2 process")
def test_two_processes_to_one_continues_at_the_sample(tmp_path: Path, no_launcher_env: None) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    ckpt = two_process_checkpoint(tmp_path, out, shuffle=False)
    resumed = trainer(tmp_path)
    resumed.fit(IndexRecorder(str(out), "resumed"), loader(2, False), ckpt_path=ckpt)  # 1 process x batch 2: skip 6 batches
    assert_each_sample_once(out)
    assert resumed.global_step == 3 + 6


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore:The checkpoint was written by 2 process")
def test_two_processes_shuffled_to_one_refuses_with_both_settings(tmp_path: Path, no_launcher_env: None) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    ckpt = two_process_checkpoint(tmp_path, out, shuffle=True)
    with pytest.raises(ResumeMismatchError) as info:
        trainer(tmp_path).fit(IndexRecorder(str(out), "resumed"), loader(2, True), ckpt_path=ckpt)
    message = str(info.value)
    assert "2 process(es) x batch size 2 = global batch 4, reading with a DistributedSampler (shuffle=True" in message, message
    assert "1 process(es) x batch size 2 = global batch 2, reading with a random sampler" in message, message
    assert not (out / "resumed-rank0.txt").exists()


class SaveThenCrashAtBatch(ember.Callback):
    def __init__(self, path: str, batch_idx: int) -> None:
        self.path, self.batch_idx = path, batch_idx

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.batch_idx:
            trainer.save_checkpoint(self.path)
            raise Crash(f"planned crash after batch {batch_idx}")


def test_refuses_another_batch_size_inside_an_accumulation_window(tmp_path: Path) -> None:
    out, ckpt = tmp_path / "seen", str(tmp_path / "mid.ckpt")
    out.mkdir()
    with pytest.raises(Crash):  # 4 batches done (16 samples): the window of batches 3-4 of 3 is unfinished
        trainer(tmp_path, [SaveThenCrashAtBatch(ckpt, 3)], accumulate_grad_batches=3).fit(
            IndexRecorder(str(out), "first"), loader(4, False)
        )
    assert torch.load(ckpt, weights_only=True)["loops"]["fit"].get("accumulated_grads")
    with pytest.raises(ResumeMismatchError, match="inside a gradient-accumulation window"):
        trainer(tmp_path, accumulate_grad_batches=3).fit(IndexRecorder(str(out), "resumed"), loader(8, False), ckpt_path=ckpt)
    # The saved batch size continues (and finishes the window) as before.
    trainer(tmp_path, accumulate_grad_batches=3).fit(IndexRecorder(str(out), "resumed"), loader(4, False), ckpt_path=ckpt)
    assert_each_sample_once(out)
