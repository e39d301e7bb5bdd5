"""Callbacks under Lightning's names: ``from lightning.pytorch.callbacks import X``
ports to ``from ember.callbacks import X``. Imported lazily, so importing this
module imports no callback.
"""

from __future__ import annotations

from typing import Any

from ember._lazy import lazy_exports
from ember.callback import Callback

_P = "ember.plugins.callbacks."
_EXPORTS = {
    "BackboneFinetuning": _P + "finetuning",
    "BaseFinetuning": _P + "finetuning",
    "BatchSizeFinder": _P + "batch_size_finder",
    "DeviceStatsMonitor": _P + "device_stats",
    "EarlyStopping": _P + "early_stopping",
    "FaultTolerance": _P + "fault_tolerance",
    "LearningRateFinder": _P + "lr_finder",
    "LearningRateMonitor": _P + "lr_monitor",
    "ModelCheckpoint": _P + "model_checkpoint",
    "ModelSummary": _P + "model_summary",
    "ProgressBar": _P + "progress",
    "TQDMProgressBar": _P + "tqdm_bar",
    "RichProgressBar": _P + "tqdm_bar",
    "RichProgressBarTheme": _P + "tqdm_bar",
    "ThroughputMonitor": _P + "throughput",
    "WeightAveraging": _P + "weight_averaging",
    "EMAWeightAveraging": _P + "weight_averaging",
    "StochasticWeightAveraging": _P + "weight_averaging",
    "ModelPruning": _P + "pruning",
    "SpikeDetection": _P + "spike_detection",
    "RichModelSummary": _P + "rich_summary",
    "LambdaCallback": _P + "utility_callbacks",
    "OnExceptionCheckpoint": _P + "utility_callbacks",
    "Timer": _P + "utility_callbacks",
    "BasePredictionWriter": _P + "utility_callbacks",
    "GradientAccumulationScheduler": _P + "utility_callbacks",
}
__all__ = sorted([*_EXPORTS, "Callback", "Checkpoint"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class _CheckpointMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        # Every callback filling the checkpoint slot is a Checkpoint, the
        # built-in ModelCheckpoint included.
        return type.__instancecheck__(cls, obj) or getattr(obj, "fills", None) == "model_checkpoint"


class Checkpoint(Callback, metaclass=_CheckpointMeta):
    """Base for checkpointing callbacks: a subclass replaces the default
    ``ModelCheckpoint``, and ``isinstance(cb, Checkpoint)`` finds every one."""

    fills = "model_checkpoint"
