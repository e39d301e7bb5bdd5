"""``DataModule``: the data side of a run, in one reusable object."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.hparams import HyperparametersMixin
from ember.module_compat import BatchTransferHooks

if TYPE_CHECKING:
    from ember.trainer import Trainer


class DataModule(HyperparametersMixin, BatchTransferHooks):
    """Groups data preparation, splits and dataloaders; names follow
    Lightning's ``LightningDataModule``. Override the dataloader methods you
    need; the trainer calls ``prepare_data`` once per node, then
    ``setup(stage)`` on every process."""

    trainer: Trainer | None = None
    #: A display name (Lightning's attribute; ember does not read it).
    name: str | None = None

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

    def on_exception(self, exception: BaseException) -> None:
        """Called when a run fails or is interrupted, before teardown."""

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Any = None,
        val_dataset: Any = None,
        test_dataset: Any = None,
        predict_dataset: Any = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> DataModule:
        """A DataModule whose dataloaders wrap the given datasets (a dataset or
        a list of them each): the train loader shuffles, the others do not.
        ``datamodule_kwargs`` go to ``cls.__init__``."""
        from ember.data import datamodule_from_datasets

        return datamodule_from_datasets(cls, (train_dataset, val_dataset, test_dataset, predict_dataset), batch_size, num_workers, datamodule_kwargs)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None, weights_only: bool | None = None, **kwargs: Any) -> DataModule:
        """Rebuild the DataModule from the hyperparameters a checkpoint saved for
        it (updated from ``hparams_file``, then ``kwargs``), and restore its ``state_dict``."""
        from ember.checkpointing import load_checkpoint_file, read_hparams_file

        checkpoint = load_checkpoint_file(str(checkpoint_path), map_location, weights_only=weights_only)
        dm = cls(**{**checkpoint.get("datamodule_hyper_parameters", {}), **read_hparams_file(hparams_file), **kwargs})
        if "datamodule" in checkpoint:
            dm.load_state_dict(checkpoint["datamodule"])
        return dm
