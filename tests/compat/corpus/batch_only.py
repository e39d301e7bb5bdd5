"""Step methods written without ``batch_idx``: ``training_step(self, batch)``.

Every step method takes the batch alone, as many projects write them; the
trainer must see that once, when the run starts, and pass only the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 7, generator=g)
    return TensorDataset(x, (x[:, 0] * x[:, 1] > 0).float()[:, None])


def build(fw: Any) -> Any:
    class BatchOnly(fw.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(7, 16), nn.SiLU(), nn.Dropout(0.2), nn.Linear(16, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = nn.functional.binary_cross_entropy_with_logits(self(x), y)
            self.log("train_loss", loss, batch_size=len(x))
            return {"loss": loss, "size": len(x)}

        def validation_step(self, batch):  # type: ignore[no-untyped-def]
            x, y = batch
            self.log("val_loss", nn.functional.binary_cross_entropy_with_logits(self(x), y))

        def test_step(self, batch):  # type: ignore[no-untyped-def]
            x, y = batch
            self.log("test_acc", ((self(x) > 0).float() == y).float().mean())

        def predict_step(self, batch):  # type: ignore[no-untyped-def]
            return torch.sigmoid(self(batch[0]))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adagrad(self.parameters(), lr=0.05)

    return BatchOnly


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(10)
    model = build(fw)()
    val = DataLoader(data(1, 24), batch_size=8)
    t = trainer(fw, max_epochs=3, default_root_dir=root)
    t.fit(model, DataLoader(data(0, 56), batch_size=8, shuffle=True), val)
    return {
        "weights": weights(model),
        "validate": t.validate(model, val, verbose=False),
        "test": t.test(model, val, verbose=False),
        "predict": t.predict(model, DataLoader(data(2, 8), batch_size=4)),
    }
