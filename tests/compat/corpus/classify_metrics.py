"""Classification that logs torchmetrics objects, with ReduceLROnPlateau.

Training logs an ``Accuracy`` object per step and per epoch; validation and
test log a ``MetricCollection`` (accuracy and F1) with ``log_dict`` and the
loss as a tensor; the learning rate drops when ``val_loss`` plateaus.
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from frameworks import recording_logger, trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: Several seconds on a loaded CPU: run in the slow tier (python -m pytest -m slow tests/compat).
SLOW = True

CLASSES = 3


def data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long())


def build(fw: Any) -> Any:
    class Classifier(fw.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, CLASSES))
            self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=CLASSES)
            metrics = torchmetrics.MetricCollection(
                {
                    "acc": torchmetrics.Accuracy(task="multiclass", num_classes=CLASSES),
                    "f1": torchmetrics.F1Score(task="multiclass", num_classes=CLASSES, average="macro"),
                }
            )
            self.val_metrics = metrics.clone(prefix="val_")
            self.test_metrics = metrics.clone(prefix="test_")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            logits = self(x)
            loss = nn.functional.cross_entropy(logits, y)
            self.train_acc(logits, y)
            self.log("train_acc", self.train_acc, on_step=True, on_epoch=True, prog_bar=True)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            self.log("val_loss", nn.functional.cross_entropy(logits, y), prog_bar=True)
            self.val_metrics.update(logits, y)
            self.log_dict(self.val_metrics)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            self.test_metrics(logits, y)
            self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0]).softmax(-1)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}

    return Classifier


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(21)
    model = build(fw)()
    train = DataLoader(data(0, 96), batch_size=16, shuffle=True)
    val = DataLoader(data(1, 40), batch_size=20)
    logger = recording_logger(fw)
    t = trainer(fw, max_epochs=4, logger=logger, log_every_n_steps=2, default_root_dir=root)
    t.fit(model, train, val)
    cm = t.callback_metrics
    return {
        "weights": weights(model),
        "lr": t.optimizers[0].param_groups[0]["lr"],
        "callback_metrics": {k: cm[k] for k in ("train_acc_epoch", "val_loss", "val_acc", "val_f1")},
        "acc_state_reset": int(model.train_acc._update_count),
        "train_acc_epochs": [m["train_acc_epoch"] for _, m in logger.calls if "train_acc_epoch" in m],
        "validate": t.validate(model, val, verbose=False),
        "test": t.test(model, DataLoader(data(2, 40), batch_size=20), verbose=False),
        "predict": t.predict(model, DataLoader(data(3, 8), batch_size=4)),
    }
