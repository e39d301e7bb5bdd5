"""A module that writes to ``self.logger.experiment`` (TensorBoard's ``SummaryWriter``,
from the default logger).

Besides ``self.log``, the module adds its own scalars, a histogram of its
weights and a text note straight to the writer, at steps it chooses; the
event files are read back and compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, (x**2).sum(1, keepdim=True))


def build(fw: Any) -> Any:
    class Logged(fw.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 12), nn.Softplus(), nn.Linear(12, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            if batch_idx % 2 == 0:
                self.logger.experiment.add_scalar("custom/grad_free_norm", self.net[0].weight.norm().item(), self.global_step)
            return loss

        def on_train_epoch_end(self) -> None:
            writer = self.logger.experiment
            writer.add_histogram("weights/first", self.net[0].weight.detach(), self.current_epoch)
            writer.add_text("notes", f"epoch {self.current_epoch} done", self.current_epoch)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return Logged


def read_events(log_dir: Any) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    return {
        "custom": [(e.step, e.value) for e in events.Scalars("custom/grad_free_norm")],
        "histogram_steps": [e.step for e in events.Histograms("weights/first")],
        "histogram_sums": [e.histogram_value.sum for e in events.Histograms("weights/first")],
        "has_text": any("notes" in t for t in tags.get("tensors", [])),
    }


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(6)
    model = build(fw)()
    # The default logger: TensorBoard when it is installed, in both frameworks.
    t = trainer(fw, max_epochs=2, logger=True, log_every_n_steps=2, default_root_dir=root)
    t.fit(model, DataLoader(data(0, 48), batch_size=8, shuffle=True), DataLoader(data(1, 16), batch_size=8))
    t.logger.experiment.flush()
    return {
        "weights": weights(model),
        "logger": type(t.logger).__name__,
        "version_dir": Path(t.logger.log_dir).name,  # under ember_logs/ and lightning_logs/
        "events": read_events(t.logger.log_dir),
    }
