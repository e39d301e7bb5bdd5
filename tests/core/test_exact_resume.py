"""Resuming from a checkpoint gives bit-identical weights (atol = rtol = 0).

The run shuffles, uses dropout, accumulates gradients over 2 batches, steps
an LR scheduler every optimizer step, and validates twice per epoch. It is
interrupted right after a checkpoint written at some moment, then resumed
in a fresh trainer with a fresh module and a different global seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.testing import quiet_trainer

EPOCHS = 3
BATCHES_PER_EPOCH = 6  # 48 samples / batch 8


class _Net(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=0.02)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.8)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _tensors() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    x = torch.randn(64, 5, generator=g)
    return x, x[:, :2].sum(1, keepdim=True) + 0.1 * torch.randn(64, 1, generator=g)


class _Digits(ember.DataModule):
    def setup(self, stage: str) -> None:
        self.x, self.y = _tensors()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x[:48], self.y[:48]), batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x[48:], self.y[48:]), batch_size=8)


def _fit_args(source: str) -> dict[str, Any]:
    if source == "datamodule":
        return {"datamodule": _Digits()}
    x, y = _tensors()
    return {
        "train_dataloaders": DataLoader(TensorDataset(x[:48], y[:48]), batch_size=8, shuffle=True),
        "val_dataloaders": DataLoader(TensorDataset(x[48:], y[48:]), batch_size=8),
    }


class _Crash(Exception):
    pass


class _SaveThenCrash(ember.Callback):
    """Writes a checkpoint at one moment of the run, then kills the run."""

    def __init__(self, hook: str, epoch: int, batch: int | None, path: Path) -> None:
        self.hook, self.epoch, self.batch, self.path = hook, epoch, batch, path
        self.batches_seen = -1

    def _maybe(self, trainer: Any, hook: str) -> None:
        if hook == self.hook and trainer.current_epoch == self.epoch and (self.batch is None or self.batches_seen == self.batch):
            trainer.save_checkpoint(self.path)
            raise _Crash

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches_seen = batch_idx
        self._maybe(trainer, "on_train_batch_end")

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if not trainer.sanity_checking:
            self._maybe(trainer, "on_validation_end")

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        self._maybe(trainer, "on_train_epoch_end")


def _trainer(tmp_path: Path, callbacks: list[Any] | None = None, val_check_interval: float = 0.5) -> ember.Trainer:
    return quiet_trainer(
        tmp_path,
        max_epochs=EPOCHS,
        accumulate_grad_batches=2,
        val_check_interval=val_check_interval,
        callbacks=callbacks or [],
        enable_fault_tolerance=None,  # the Trainer's default
    )


def _reference(tmp_path: Path, source: str) -> dict[str, torch.Tensor]:
    ember.seed_everything(2024)
    module = _Net()
    _trainer(tmp_path).fit(module, **_fit_args(source))
    return module.state_dict()


RESUME_POINTS = [
    pytest.param("on_train_batch_end", 0, 0, id="first-step-of-run"),
    pytest.param("on_train_batch_end", 0, 2, id="mid-window-epoch0"),
    pytest.param("on_train_batch_end", 1, 2, id="before-mid-epoch-validation"),
    pytest.param("on_validation_end", 1, 2, id="after-mid-epoch-validation"),
    pytest.param("on_train_batch_end", 1, BATCHES_PER_EPOCH - 1, id="last-step-of-epoch"),
    pytest.param("on_train_epoch_end", 1, None, id="during-epoch-end"),
    pytest.param("on_train_batch_end", 2, 0, id="first-step-of-epoch"),
]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["datamodule", "dataloaders"])
@pytest.mark.parametrize("hook,epoch,batch", RESUME_POINTS)
def test_resume_is_bit_identical(tmp_path: Path, source: str, hook: str, epoch: int, batch: int | None) -> None:
    expected = _reference(tmp_path, source)

    ckpt = tmp_path / "interrupted.ckpt"
    ember.seed_everything(2024)
    with pytest.raises(_Crash):
        _trainer(tmp_path, [_SaveThenCrash(hook, epoch, batch, ckpt)]).fit(_Net(), **_fit_args(source))
    assert ckpt.exists()

    ember.seed_everything(12345)  # a fresh process would not share the first run's random state
    resumed = _Net()
    trainer = _trainer(tmp_path)
    trainer.fit(resumed, **_fit_args(source), ckpt_path=ckpt)

    assert trainer.current_epoch == EPOCHS
    got = resumed.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(
            got[name], value, rtol=0, atol=0, msg=f"{name} differs after resuming at {hook} epoch={epoch} batch={batch}"
        )


def test_resume_continues_epoch_metrics_and_step(tmp_path: Path) -> None:
    """Epoch aggregates include the batches before the interruption."""
    ember.seed_everything(2024)
    reference = _trainer(tmp_path)
    reference.fit(_Net(), **_fit_args("dataloaders"))

    ckpt = tmp_path / "mid.ckpt"
    ember.seed_everything(2024)
    with pytest.raises(_Crash):
        _trainer(tmp_path, [_SaveThenCrash("on_train_batch_end", 2, 3, ckpt)]).fit(_Net(), **_fit_args("dataloaders"))
    resumed = _trainer(tmp_path)
    resumed.fit(_Net(), **_fit_args("dataloaders"), ckpt_path=ckpt)
    assert resumed.global_step == reference.global_step
    for key in ("train_loss_epoch", "val_loss"):
        torch.testing.assert_close(resumed.callback_metrics[key], reference.callback_metrics[key], rtol=0, atol=0)


def test_iterable_dataset_resume_warns(tmp_path: Path) -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            x, y = _tensors()
            return iter(list(zip(x[:48], y[:48], strict=True)))

    ckpt = tmp_path / "stream.ckpt"
    loader = DataLoader(Stream(), batch_size=8)
    with pytest.raises(_Crash):
        _trainer(tmp_path, [_SaveThenCrash("on_train_batch_end", 0, 1, ckpt)], val_check_interval=1.0).fit(_Net(), loader)
    with pytest.warns(UserWarning, match="IterableDataset.*may differ"):
        _trainer(tmp_path, val_check_interval=1.0).fit(_Net(), loader, ckpt_path=ckpt)


class _EpochScheduled(_Net):
    """An epoch-interval LR scheduler as well: stepping it at a max_steps stop
    inside an epoch would change every later step."""

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=0.02)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


def _steps_trainer(tmp_path: Path, max_steps: int, callbacks: list[Any] | None = None) -> ember.Trainer:
    return quiet_trainer(
        tmp_path, max_epochs=None, max_steps=max_steps, val_check_interval=0.5, callbacks=callbacks or [], enable_fault_tolerance=None
    )


@pytest.mark.parametrize("stop_at", [4, 5, 8], ids=["mid-epoch-after-validation", "mid-epoch", "next-epoch-mid"])
def test_resume_after_a_max_steps_stop_inside_an_epoch_is_bit_identical(tmp_path: Path, stop_at: int) -> None:
    """fit stops at max_steps in the middle of an epoch; trainer.save_checkpoint
    afterwards; a new trainer with a larger max_steps resumes from it."""
    total = 3 * BATCHES_PER_EPOCH
    ember.seed_everything(7)
    expected = _EpochScheduled()
    _steps_trainer(tmp_path, total).fit(expected, **_fit_args("dataloaders"))

    ember.seed_everything(7)
    first = _steps_trainer(tmp_path, stop_at)
    first.fit(_EpochScheduled(), **_fit_args("dataloaders"))
    assert first.global_step == stop_at
    first.save_checkpoint(tmp_path / "stopped.ckpt")

    ember.seed_everything(999)
    resumed = _EpochScheduled()
    trainer = _steps_trainer(tmp_path, total)
    trainer.fit(resumed, **_fit_args("dataloaders"), ckpt_path=tmp_path / "stopped.ckpt")
    assert trainer.global_step == total and trainer.current_epoch == 3
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(
            resumed.state_dict()[name], value, rtol=0, atol=0, msg=f"{name} differs after a max_steps={stop_at} stop"
        )
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3


def test_model_checkpoints_last_file_after_a_max_steps_stop_continues_the_epoch(tmp_path: Path) -> None:
    """ModelCheckpoint saves last.ckpt at the epoch end that a max_steps stop
    inside the epoch runs; resuming from it is bit-identical too."""
    from ember.plugins.callbacks import ModelCheckpoint

    def args() -> dict[str, Any]:
        return {"train_dataloaders": _fit_args("dataloaders")["train_dataloaders"]}  # no validation: saves at the epoch end

    ember.seed_everything(7)
    expected = _EpochScheduled()
    _steps_trainer(tmp_path, 18).fit(expected, **args())
    ember.seed_everything(7)
    mc = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    _steps_trainer(tmp_path, 5, [mc]).fit(_EpochScheduled(), **args())
    assert torch.load(mc.last_model_path, weights_only=True)["loops"]["fit"]["batches_done"] == 5
    ember.seed_everything(1)
    resumed = _EpochScheduled()
    _steps_trainer(tmp_path, 18).fit(resumed, **args(), ckpt_path=mc.last_model_path)
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
