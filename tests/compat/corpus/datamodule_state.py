"""A DataModule with ``prepare_data``, ``setup`` and ``state_dict``.

``prepare_data`` writes the data set to disk once, ``setup`` reads it back;
the DataModule keeps a curriculum level (raised by the module after each
epoch) that scales the noise its dataset adds, and saves it in checkpoints.
Training stops after two epochs, then resumes from the checkpoint with a
fresh DataModule, which must get its level back.
"""

from __future__ import annotations

from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Noisy(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, owner: Any) -> None:
        self.x, self.y, self.owner = x, y, owner

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 * self.owner.level + i)
        return self.x[i] + 0.05 * self.owner.level * torch.randn(self.x.shape[1], generator=g), self.y[i]


def build(fw: Any) -> tuple[Any, Any]:
    class Curriculum(fw.LightningDataModule):
        def __init__(self, data_dir: Any, batch_size: int = 8) -> None:
            super().__init__()
            self.data_dir = data_dir
            self.batch_size = batch_size
            self.level = 0
            self.prepared_here = False

        def prepare_data(self) -> None:
            path = self.data_dir / "data.pt"
            if not path.exists():
                g = torch.Generator().manual_seed(2)
                x = torch.randn(80, 5, generator=g)
                self.data_dir.mkdir(parents=True, exist_ok=True)
                torch.save({"x": x, "y": x @ torch.linspace(-1, 1, 5)[:, None]}, path)
                self.prepared_here = True

        def setup(self, stage: str) -> None:
            saved = torch.load(self.data_dir / "data.pt")
            self.train_set = Noisy(saved["x"][:64], saved["y"][:64], self)
            self.val_set = Noisy(saved["x"][64:], saved["y"][64:], self)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(self.val_set, batch_size=self.batch_size)

        def state_dict(self) -> dict[str, Any]:
            return {"level": self.level}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.level = state_dict["level"]

    class Linear(fw.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def on_train_epoch_end(self) -> None:
            self.trainer.datamodule.level += 1

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_mse", nn.functional.mse_loss(self(x), y), prog_bar=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Curriculum, Linear


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(9)
    Curriculum, Linear = build(fw)
    model, first = Linear(), Curriculum(root / "data")
    t = trainer(fw, max_epochs=2, default_root_dir=root)
    t.fit(model, datamodule=first)
    t.save_checkpoint(root / "mid.ckpt")
    stored = torch.load(root / "mid.ckpt", weights_only=False)
    stored_states = [v for k, v in stored.items() if isinstance(v, dict) and v == {"level": 2}]

    second = Curriculum(root / "data")
    t2 = trainer(fw, max_epochs=4, default_root_dir=root)
    t2.fit(model, datamodule=second, ckpt_path=str(root / "mid.ckpt"))
    return {
        "weights": weights(model),
        "prepared": [first.prepared_here, second.prepared_here],
        "stored_state": stored_states,
        "levels": [first.level, second.level],
        "validate": t2.validate(model, datamodule=second, verbose=False),
    }
