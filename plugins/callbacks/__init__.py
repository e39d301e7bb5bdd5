"""ember's built-in callbacks.

Each module is also a plugin (see ``ember.plugin_manager.BUILTIN_PLUGINS``)
that registers its callback by name, so stack files can ask for it.
"""

from ember.plugins.callbacks.batch_size_finder import BatchSizeFinder
from ember.plugins.callbacks.device_stats import DeviceStatsMonitor
from ember.plugins.callbacks.early_stopping import EarlyStopping
from ember.plugins.callbacks.fault_tolerance import FaultTolerance
from ember.plugins.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from ember.plugins.callbacks.lr_finder import LearningRateFinder
from ember.plugins.callbacks.lr_monitor import LearningRateMonitor
from ember.plugins.callbacks.model_checkpoint import ModelCheckpoint
from ember.plugins.callbacks.model_summary import ModelSummary, summarize
from ember.plugins.callbacks.progress import ProgressBar
from ember.plugins.callbacks.throughput import ThroughputMonitor

__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "BatchSizeFinder",
    "DeviceStatsMonitor",
    "EarlyStopping",
    "FaultTolerance",
    "LearningRateFinder",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "ProgressBar",
    "ThroughputMonitor",
    "summarize",
]
