"""ember's built-in callbacks.

Each module is also a plugin (see ``ember.plugin_manager.BUILTIN_PLUGINS``)
that registers its callback by name, so stack files can ask for it.
"""

from ember.plugins.callbacks.early_stopping import EarlyStopping
from ember.plugins.callbacks.lr_monitor import LearningRateMonitor
from ember.plugins.callbacks.model_checkpoint import ModelCheckpoint
from ember.plugins.callbacks.model_summary import ModelSummary, summarize
from ember.plugins.callbacks.progress import ProgressBar

__all__ = ["EarlyStopping", "LearningRateMonitor", "ModelCheckpoint", "ModelSummary", "ProgressBar", "summarize"]
