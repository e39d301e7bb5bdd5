"""The scikit-learn digits data set (1,797 8x8 greyscale images of the digits
0-9, bundled with scikit-learn, so nothing is downloaded) as an ember
DataModule."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import ember


class DigitsDataModule(ember.DataModule):
    """Stratified train / validation / test split of ``sklearn.datasets.load_digits``.

    The split is fixed by ``split_seed`` (independent of the training seed), so
    every run validates on the same images. Pixels are scaled to ``[0, 1]`` and
    images come as ``(N, 1, 8, 8)`` float tensors with ``int64`` labels.
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def prepare_data(self) -> None:
        # The data ships inside scikit-learn: loading it once here only checks
        # that scikit-learn is installed, with a clear message if it is not.
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("The digits example needs scikit-learn: pip install 'ember[examples]'") from exc

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        images, labels = load_digits(return_X_y=True)
        x = torch.as_tensor(images, dtype=torch.float32).div_(16.0).reshape(-1, 1, 8, 8)
        y = torch.as_tensor(labels, dtype=torch.int64)

        held_out = self.val_fraction + self.test_fraction
        idx = torch.arange(len(y)).numpy()
        train_idx, rest_idx = train_test_split(idx, test_size=held_out, stratify=labels, random_state=self.split_seed)
        val_idx, test_idx = train_test_split(
            rest_idx,
            test_size=self.test_fraction / held_out,
            stratify=labels[rest_idx],
            random_state=self.split_seed,
        )
        self.train_set = TensorDataset(x[train_idx], y[train_idx])
        self.val_set = TensorDataset(x[val_idx], y[val_idx])
        self.test_set = TensorDataset(x[test_idx], y[test_idx])

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return DataLoader(self.val_set, batch_size=256, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return DataLoader(self.test_set, batch_size=256, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # Nothing stateful: the split is a pure function of the hyperparameters.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
