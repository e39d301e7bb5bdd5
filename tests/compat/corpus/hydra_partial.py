"""A config-driven module in the style of Hydra project templates.

The network, the optimizer and the scheduler arrive from configuration: the
network as an ``nn.Module``, the optimizer and scheduler as
``functools.partial`` objects completed in ``configure_optimizers`` (with
``self.trainer.model.parameters()``). Metrics are torchmetrics objects
(``MeanMetric``, ``Accuracy``, ``MaxMetric`` for the best validation accuracy),
logged under ``stage/name`` keys; ``save_hyperparameters(logger=False)``
keeps the partials out of the logger.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

#: Several seconds on a loaded CPU: run in the slow tier (python -m pytest -m slow tests/compat).
SLOW = True


def data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return TensorDataset(x, x[:, :4].argmax(1))


def build(fw: Any) -> Any:
    class ConfiguredModule(fw.LightningModule):
        def __init__(self, net: nn.Module, optimizer: Any, scheduler: Any, compile: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters(logger=False, ignore=["net"])
            self.net = net
            self.criterion = nn.CrossEntropyLoss()
            self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes=4) for _ in range(3))
            self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
            self.val_acc_best = MaxMetric()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def on_train_start(self) -> None:
            self.val_loss.reset()
            self.val_acc.reset()
            self.val_acc_best.reset()

        def model_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x, y = batch
            logits = self(x)
            return self.criterion(logits, y), logits.argmax(dim=1), y

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss, preds, targets = self.model_step(batch)
            self.train_loss(loss)
            self.train_acc(preds, targets)
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            loss, preds, targets = self.model_step(batch)
            self.val_loss(loss)
            self.val_acc(preds, targets)
            self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

        def on_validation_epoch_end(self) -> None:
            self.val_acc_best(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            loss, preds, targets = self.model_step(batch)
            self.test_loss(loss)
            self.test_acc(preds, targets)
            self.log("test/loss", self.test_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("test/acc", self.test_acc, on_step=False, on_epoch=True, prog_bar=True)

        def setup(self, stage: str) -> None:
            if self.hparams.compile and stage == "fit":
                self.net = torch.compile(self.net)

        def configure_optimizers(self) -> Any:
            optimizer = self.hparams.optimizer(params=self.trainer.model.parameters())
            if self.hparams.scheduler is not None:
                scheduler = self.hparams.scheduler(optimizer=optimizer)
                return {
                    "optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch", "frequency": 1},
                }
            return {"optimizer": optimizer}

    return ConfiguredModule


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(12)
    net = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    model = build(fw)(
        net=net,
        optimizer=functools.partial(torch.optim.Adam, lr=0.01, weight_decay=0.0),
        scheduler=functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", factor=0.1, patience=1),
    )
    t = trainer(fw, max_epochs=4, default_root_dir=root)
    t.fit(model, DataLoader(data(0, 96), batch_size=16, shuffle=True), DataLoader(data(1, 32), batch_size=16))
    cm = t.callback_metrics
    return {
        "weights": weights(model),
        "hparams": sorted(model.hparams),
        "best": cm["val/acc_best"],
        "callback_metrics": {k: cm[k] for k in ("train/loss", "train/acc", "val/loss", "val/acc")},
        "test": t.test(model, DataLoader(data(2, 32), batch_size=16), verbose=False),
    }
