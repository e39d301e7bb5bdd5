"""``DataModule``: the data side of a run, in one reusable object."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.hparams import HyperparametersMixin

if TYPE_CHECKING:
    from ember.trainer import Trainer


class DataModule(HyperparametersMixin):
    """Groups data preparation, splits and dataloaders; names follow
    Lightning's ``LightningDataModule``. Override the dataloader methods you
    need; the trainer calls ``prepare_data`` once per node, then
    ``setup(stage)`` on every process."""

    trainer: Trainer | None = None

    def prepare_data(self) -> None:
        """Download or write data to disk. Do not assign state here: it runs on one process."""

    def setup(self, stage: str) -> None:
        """Build datasets for ``stage`` (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``)."""

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built."""

    def train_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no train_dataloader().")

    def val_dataloader(self) -> Any:
        raise NotImplementedError

    def test_dataloader(self) -> Any:
        raise NotImplementedError

    def predict_dataloader(self) -> Any:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (under ``"datamodule"``)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
