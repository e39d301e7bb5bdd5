"""An autoencoder with a DataModule and a callback that reads ``trainer.datamodule``.

The callback reconstructs a fixed sample the DataModule exposes at the end of
every validation, writes it to a file and keeps its error, in a method
decorated with ``rank_zero_only`` (the usual image-logging callback).
"""

from __future__ import annotations

from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def build(fw: Any) -> tuple[Any, Any, Any]:
    class Shapes(fw.LightningDataModule):
        def __init__(self, batch_size: int = 16) -> None:
            super().__init__()
            self.save_hyperparameters()

        def setup(self, stage: str) -> None:
            g = torch.Generator().manual_seed(0)
            codes = torch.randn(128, 3, generator=g)
            mixing = torch.randn(3, 12, generator=g)
            self.all = torch.tanh(codes @ mixing)
            self.train_set, self.val_set = TensorDataset(self.all[:96]), TensorDataset(self.all[96:])

        def sample(self, n: int) -> torch.Tensor:
            return self.all[-n:]

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

        def test_dataloader(self) -> DataLoader:
            return DataLoader(self.val_set, batch_size=8)

        def predict_dataloader(self) -> DataLoader:
            return DataLoader(self.all[:8], batch_size=4)  # plain tensors: the default predict_step gets them whole

    class AutoEncoder(fw.LightningModule):
        def __init__(self, code: int = 3) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(12, 8), nn.GELU(), nn.Linear(8, code))
            self.decoder = nn.Sequential(nn.Linear(code, 8), nn.GELU(), nn.Linear(8, 12))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x))

        def _loss(self, batch: Any) -> torch.Tensor:
            (x,) = batch
            return nn.functional.mse_loss(self(x), x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self._loss(batch)
            self.log("train_mse", loss, prog_bar=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_mse", self._loss(batch))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.log("test_mse", self._loss(batch), on_step=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.RMSprop(self.parameters(), lr=3e-3)

    class Reconstructions(fw.Callback):
        def __init__(self, out_dir: Any) -> None:
            self.out_dir = out_dir
            self.errors: list[torch.Tensor] = []

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                self.save(trainer, pl_module)

        @fw.rank_zero_only
        def save(self, trainer: Any, pl_module: Any) -> None:
            sample = trainer.datamodule.sample(4).to(pl_module.device)
            with torch.no_grad():
                out = pl_module(sample)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            torch.save(out, self.out_dir / f"epoch{trainer.current_epoch}.pt")
            self.errors.append((out - sample).abs().mean())

    return Shapes, AutoEncoder, Reconstructions


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(8)
    Shapes, AutoEncoder, Reconstructions = build(fw)
    data, model = Shapes(), AutoEncoder()
    recon = Reconstructions(root / "recon")
    t = trainer(fw, max_epochs=3, callbacks=[recon], default_root_dir=root)
    t.fit(model, datamodule=data)
    return {
        "weights": weights(model),
        "errors": recon.errors,
        "files": sorted(p.name for p in (root / "recon").iterdir()),
        "validate": t.validate(model, datamodule=data, verbose=False),
        "test": t.test(model, datamodule=data, verbose=False),
        "predict": t.predict(model, datamodule=data),
    }
