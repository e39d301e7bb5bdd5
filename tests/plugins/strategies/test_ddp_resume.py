"""Exact mid-epoch resume with two processes: each rank saves and restores its
own random state, so a resumed ``ddp_spawn`` run (shuffling, dropout) ends
with the same weights as an uninterrupted one.

The module and callback live at the top of this file: spawned workers
re-import them by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from strategy_helpers import SaveThenCrash
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.strategies.ddp import DDPWorkerError
from ember.testing import quiet_trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


class Dropper(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.4), torch.nn.Linear(16, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.02)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 4, generator=g)
    return DataLoader(TensorDataset(x, x[:, :1] - x[:, 1:2]), batch_size=4, shuffle=True)


def trainer(root: Path, callbacks: list[Any] | None = None) -> ember.Trainer:
    return quiet_trainer(root, strategy="ddp_spawn", devices=2, accelerator="cpu", max_epochs=2, callbacks=callbacks or [])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_process_mid_epoch_resume_is_bit_identical(tmp_path: Path) -> None:
    ember.seed_everything(11)
    reference = Dropper()
    uninterrupted = trainer(tmp_path / "ref")
    uninterrupted.fit(reference, loader())

    ckpt = tmp_path / "mid.ckpt"
    ember.seed_everything(11)
    with pytest.raises(DDPWorkerError, match="planned crash"):
        trainer(tmp_path, [SaveThenCrash(str(ckpt), at_step=5)]).fit(Dropper(), loader())
    saved = torch.load(ckpt, weights_only=True)
    per_rank = saved["loops"]["fit"]["rng_per_rank"]
    assert len(per_rank) == 2, "each rank's random state is in the checkpoint"
    assert saved["loops"]["fit"]["batches_done"] == 5

    ember.seed_everything(99)  # a relaunch need not share the first run's seed
    resumed = Dropper()
    again = trainer(tmp_path)
    again.fit(resumed, loader(), ckpt_path=str(ckpt))
    assert again.global_step == uninterrupted.global_step
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0, msg=f"{name} differs after a 2-process resume")
