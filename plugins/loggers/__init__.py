"""ember's built-in loggers.

Each module is also a plugin (see ``ember.plugin_manager.BUILTIN_PLUGINS``)
that registers its logger by name, so stack files can ask for it.
"""

from ember.plugins.loggers.csv_logger import CSVLogger
from ember.plugins.loggers.mlflow import MLflowLogger
from ember.plugins.loggers.tensorboard import TensorBoardLogger
from ember.plugins.loggers.wandb import WandbLogger

# The vendor loggers import their libraries only when they first write, so
# importing them here costs nothing.
__all__ = ["CSVLogger", "MLflowLogger", "TensorBoardLogger", "WandbLogger"]
