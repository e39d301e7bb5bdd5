"""Fine-tuning a pretrained backbone with ``BackboneFinetuning``.

The backbone (with batch norm) is frozen at first; at epoch 1 the callback
adds it to the live optimizer as a second parameter group with a small
learning rate that grows each epoch. The run is checkpointed after epoch 2
and resumed to epoch 4 in a fresh trainer, so the callback must rebuild the
added group before the optimizer's state is loaded. A LearningRateMonitor
logs the rates, whose names change when the group is added.
"""

from __future__ import annotations

from typing import Any

import torch
from frameworks import recording_logger, trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: Several seconds on a loaded CPU: run in the slow tier (python -m pytest -m slow tests/compat).
SLOW = True


def data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, :4].sum(1) > x[:, 4:].sum(1)).long())


def build(fw: Any) -> Any:
    class Classifier(fw.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
            self.head = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0]).argmax(1)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=0.01)

    return Classifier


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(11)
    model = build(fw)()
    train = DataLoader(data(0, 64), batch_size=8, shuffle=True)
    val = DataLoader(data(1, 32), batch_size=16)

    def callbacks() -> list[Any]:
        return [
            fw.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1),
            fw.callbacks.LearningRateMonitor(),
        ]

    first_logger = recording_logger(fw)
    t = trainer(fw, max_epochs=2, callbacks=callbacks(), logger=first_logger, log_every_n_steps=3, default_root_dir=root)
    t.fit(model, train, val)
    groups_after_unfreeze = [len(g["params"]) for g in t.optimizers[0].param_groups]
    frozen_before = [p.requires_grad for p in model.backbone.parameters()]
    t.save_checkpoint(root / "two_epochs.ckpt")

    resumed_logger = recording_logger(fw)
    t2 = trainer(fw, max_epochs=4, callbacks=callbacks(), logger=resumed_logger, log_every_n_steps=3, default_root_dir=root)
    t2.fit(model, train, val, ckpt_path=str(root / "two_epochs.ckpt"))
    lr_calls = [(step, {k: v for k, v in m.items() if k.startswith("lr-")}) for step, m in first_logger.calls + resumed_logger.calls]
    return {
        "weights": weights(model),
        "groups_after_unfreeze": groups_after_unfreeze,
        "backbone_trainable_after_epoch_2": frozen_before,
        "lrs": [g["lr"] for g in t2.optimizers[0].param_groups],
        "lr_monitor": [c for c in lr_calls if c[1]],
        "validate": t2.validate(model, val, verbose=False),
        "predict": t2.predict(model, DataLoader(data(2, 8), batch_size=4)),
    }
