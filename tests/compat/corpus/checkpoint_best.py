"""``ModelCheckpoint`` + ``EarlyStopping``, then ``test(ckpt_path="best")``.

A noisy regression whose validation loss stops improving: early stopping
ends the run, the two best checkpoints are kept, and testing in the same
process restores the best one first.
"""

from __future__ import annotations

from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def data(seed: int, n: int, noise: float) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True) + noise * torch.randn(n, 1, generator=g))


def build(fw: Any) -> Any:
    class Regressor(fw.LightningModule):
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self(x), y), prog_bar=True)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_loss", nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    return Regressor


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(17)
    model = build(fw)()
    checkpoint = fw.callbacks.ModelCheckpoint(dirpath=root / "ckpt", monitor="val_loss", mode="min", save_top_k=2)
    stopping = fw.callbacks.EarlyStopping(monitor="val_loss", patience=2, mode="min")
    t = trainer(fw, max_epochs=30, callbacks=[checkpoint, stopping], enable_checkpointing=True, default_root_dir=root)
    t.fit(model, DataLoader(data(0, 64, 1.0), batch_size=8, shuffle=True), DataLoader(data(1, 32, 1.0), batch_size=16))
    trained, stopped_epoch = weights(model), stopping.stopped_epoch
    test = t.test(model, DataLoader(data(2, 32, 1.0), batch_size=16), ckpt_path="best", verbose=False)
    return {
        "weights": weights(model),
        "trained_weights": trained,
        "stopped_epoch": stopped_epoch,
        "current_epoch": t.current_epoch,
        "best_score": checkpoint.best_model_score,
        "best_file": (root / "ckpt").joinpath(checkpoint.best_model_path).name,
        "kept": sorted(p.name for p in (root / "ckpt").glob("*.ckpt")),
        "test": test,
    }
