"""A small 2D CNN for 28x28 MedMNIST-style classification, as an ember Module.

It logs loss, accuracy and the area under the ROC curve (AUROC, one class
against the rest, averaged over classes), the metric MedMNIST reports.
AUROC is computed here from ranks, with torch only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import ember

# --------------------------------------------------------------------------- AUROC


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing the mean of their ranks (float64)."""
    sorted_values, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)  # rank of each tie group's last member
    mean_rank = last - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(values.numel(), dtype=torch.float64, device=values.device)
    ranks[order] = mean_rank[inverse]
    return ranks


def binary_auroc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """AUROC of ``scores`` for a boolean target, by the rank-sum (Mann-Whitney U) formula.

    It is the probability that a random positive scores above a random
    negative, ties counting one half. ``nan`` when either class is absent.
    """
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    rank_sum = average_ranks(scores.to(torch.float64))[positive].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def multiclass_auroc(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One-vs-rest AUROC averaged over the classes present (with and without) in ``target``.

    ``probs`` is ``(N, C)`` (any scores that rank the samples for each class
    work, logits included); ``target`` holds class indices. With two classes
    both one-vs-rest curves have the same area, the usual binary AUROC.
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {tuple(probs.shape)}")
    per_class = [binary_auroc(probs[:, c], target == c) for c in range(probs.shape[1])]
    areas = torch.stack(per_class)
    areas = areas[~torch.isnan(areas)]
    return areas.mean().to(torch.float32) if areas.numel() else torch.tensor(float("nan"))


# --------------------------------------------------------------------------- the model


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class MedicalCNN(ember.Module):
    """Three 3x3 convolution blocks (28 -> 14 -> 7 pixels), global average
    pooling and a linear classifier: about 25 thousand parameters at the
    default ``width = 16``.

    :param in_channels: image channels (3 for BloodMNIST, 1 for PneumoniaMNIST).
    :param num_classes: classes (8 for BloodMNIST, 2 for PneumoniaMNIST).
    :param width: channels of the first block; the next two have twice and four times as many.
    :param dropout: dropout before the classifier.
    :param lr: peak learning rate of the one-cycle schedule (AdamW).
    :param weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 8,
        width: int = 16,
        dropout: float = 0.1,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            conv_block(in_channels, width),
            nn.MaxPool2d(2),  # 28 -> 14
            conv_block(width, 2 * width),
            nn.MaxPool2d(2),  # 14 -> 7
            conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))
        # Used by the model summary (shapes per layer) and as the export example.
        self.example_input_array = torch.zeros(1, in_channels, 28, 28)
        self._scores: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"train": [], "val": [], "test": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` for images ``(N, in_channels, 28, 28)``."""
        return self.classifier(self.features(x))

    # ------------------------------------------------------------------ steps
    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x).float()  # float32 under bf16 autocast too
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        self._scores[stage].append((logits.detach().softmax(dim=1).cpu(), y.detach().cpu()))
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=stage != "test", on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}_acc", acc, prog_bar=stage == "val", on_step=False, on_epoch=True)
        return loss

    def _log_auroc(self, stage: str) -> None:
        scores = self._scores[stage]
        self._scores[stage] = []
        if not scores:
            return
        probs = torch.cat([p for p, _ in scores])
        target = torch.cat([t for _, t in scores])
        # Whole-epoch value: AUROC is not an average of per-batch AUROCs.
        # (Single process; under DDP each rank would report its own shard.)
        self.log(f"{stage}_auroc", multiclass_auroc(probs, target), prog_bar=stage == "val")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)``, float32."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).float().softmax(dim=1)

    def on_train_epoch_start(self) -> None:
        self._scores["train"] = []

    def on_train_epoch_end(self) -> None:
        self._log_auroc("train")

    def on_validation_epoch_start(self) -> None:
        self._scores["val"] = []

    def on_validation_epoch_end(self) -> None:
        self._log_auroc("val")

    def on_test_epoch_start(self) -> None:
        self._scores["test"] = []

    def on_test_epoch_end(self) -> None:
        self._log_auroc("test")

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
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=self._total_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
