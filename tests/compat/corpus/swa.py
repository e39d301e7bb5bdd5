"""Stochastic weight averaging by hand, with ``torch.optim.swa_utils``.

The module keeps an ``AveragedModel`` of its network, updates it at the end
of each epoch from ``swa_start`` on, and switches the learning rate with an
``SWALR`` it steps itself (not returned to the trainer); validation and
prediction use the averaged weights once averaging has begun.
"""

from __future__ import annotations

from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel
from torch.utils.data import DataLoader, TensorDataset


def data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 6 - 3
    return TensorDataset(x, torch.sin(x) + 0.1 * torch.randn(n, 1, generator=g))


def build(fw: Any) -> Any:
    class Regressor(fw.LightningModule):
        def __init__(self, swa_start: int = 2) -> None:
            super().__init__()
            self.swa_start = swa_start
            self.net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
            self.swa_model = AveragedModel(self.net)

        def model_in_use(self) -> nn.Module:
            return self.swa_model if self.current_epoch > self.swa_start else self.net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model_in_use()(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def on_train_epoch_end(self) -> None:
            if self.current_epoch >= self.swa_start:
                self.swa_model.update_parameters(self.net)
                self.swa_scheduler.step()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self(x), y))

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0])

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9)
            self.swa_scheduler = SWALR(opt, swa_lr=0.02, anneal_epochs=2)
            return opt

    return Regressor


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(4)
    model = build(fw)()
    train = DataLoader(data(0, 64), batch_size=16, shuffle=True)
    val = DataLoader(data(1, 32), batch_size=32)
    t = trainer(fw, max_epochs=6, default_root_dir=root)
    t.fit(model, train, val)
    return {
        "weights": weights(model),
        "averaged": int(model.swa_model.n_averaged),
        "lr": t.optimizers[0].param_groups[0]["lr"],
        "validate": t.validate(model, val, verbose=False),
        "predict": t.predict(model, DataLoader(data(2, 8), batch_size=4)),
    }
