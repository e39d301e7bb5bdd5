"""Same seed, same data, same module: ember and PyTorch Lightning end with
the same weights on CPU. Lightning is a test-only dependency."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember

pl = pytest.importorskip("pytorch_lightning", reason="PyTorch Lightning is not installed (pip install -e '.[dev]')")


def _data() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, :3].sum(1, keepdim=True) > 0).float()
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=8, shuffle=True)
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16)
    return train, val


def _body(base: type, *, accumulate_scheduler: str) -> type:
    class Net(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            self.log("val_loss", torch.nn.functional.binary_cross_entropy_with_logits(self(x), y))

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            opt = torch.optim.AdamW(self.parameters(), lr=0.01)
            if accumulate_scheduler == "step":
                sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
            else:
                sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": accumulate_scheduler}}

    return Net


COMMON = dict(max_epochs=3, gradient_clip_val=0.5, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


@pytest.mark.parametrize("interval,accumulate", [("epoch", 1), ("step", 3)])
def test_same_weights_as_lightning(interval: str, accumulate: int) -> None:
    ember.seed_everything(7)
    train, val = _data()
    ours = _body(ember.Module, accumulate_scheduler=interval)()
    ember.Trainer(accumulate_grad_batches=accumulate, **COMMON).fit(ours, train, val)

    pl.seed_everything(7, verbose=False)
    train, val = _data()
    theirs = _body(pl.LightningModule, accumulate_scheduler=interval)()
    pl.Trainer(accelerator="cpu", devices=1, accumulate_grad_batches=accumulate, **COMMON).fit(theirs, train, val)

    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for name in ours_state:
        torch.testing.assert_close(ours_state[name], theirs_state[name], rtol=0, atol=0, msg=f"{name} differs")
