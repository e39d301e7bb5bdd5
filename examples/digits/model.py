"""A small convolutional network for the 8x8 digits, as an ember Module."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import ember


class DigitsCNN(ember.Module):
    """Two 3x3 convolution blocks and a linear classifier.

    It has about 77 thousand parameters and trains to over 97 % validation
    accuracy in a few seconds on a laptop CPU.
    """

    def __init__(
        self,
        channels: int = 32,
        hidden: int = 128,
        dropout: float = 0.25,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        scheduler: str = "onecycle",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if scheduler not in ("onecycle", "cosine"):
            raise ValueError(f"scheduler must be 'onecycle' or 'cosine', not {scheduler!r}")
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * 4 * 4, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, acc

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._evaluate(batch)
        self.log("val_loss", loss)
        self.log("val_acc", acc, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._evaluate(batch)
        self.log("test_loss", loss)
        self.log("test_acc", acc)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=1)

    # ------------------------------------------------------------ optimisers
    def _total_steps(self) -> int:
        """Optimizer steps the run will take at most, for the LR schedule."""
        trainer = self.trainer
        estimated = getattr(trainer, "estimated_stepping_batches", None)
        if isinstance(estimated, (int, float)) and 0 < estimated < float("inf"):
            return int(estimated)
        batches = trainer.num_training_batches
        if not isinstance(batches, int) or batches <= 0:
            batches = len(trainer.datamodule.train_dataloader())
        return max(1, int(trainer.max_epochs) * batches)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = self._total_steps()
        if hp.scheduler == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=total)
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
