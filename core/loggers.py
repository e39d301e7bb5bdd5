"""Loggers under Lightning's names: ``from lightning.pytorch.loggers import X``
ports to ``from ember.loggers import X``. Imported lazily."""

from __future__ import annotations

from ember._lazy import lazy_exports

_EXPORTS = {
    "Logger": "ember.callback",
    "CSVLogger": "ember.plugins.loggers.csv_logger",
    "TensorBoardLogger": "ember.plugins.loggers.tensorboard",
    "WandbLogger": "ember.plugins.loggers.wandb",
    "MLflowLogger": "ember.plugins.loggers.mlflow",
    "MLFlowLogger": "ember.plugins.loggers.mlflow:MLflowLogger",  # Lightning's spelling
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
