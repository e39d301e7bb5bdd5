"""Profilers under Lightning's names: ``from lightning.pytorch.profilers import X``
ports to ``from ember.profilers import X``. Imported lazily.

``Profiler`` is the protocol every profiler meets (``isinstance`` works);
``PassThroughProfiler`` profiles nothing, as ``profiler=None`` does.
"""

from __future__ import annotations

from typing import Any

from ember._lazy import lazy_exports
from ember.callback import Callback

_EXPORTS = {
    "Profiler": "ember.roles",
    "SimpleProfiler": "ember.plugins.profilers.simple",
    "AdvancedProfiler": "ember.plugins.profilers.advanced",
    "PyTorchProfiler": "ember.plugins.profilers.pytorch:TorchProfiler",  # Lightning's name
    "TorchProfiler": "ember.plugins.profilers.pytorch",
}
__all__ = sorted([*_EXPORTS, "PassThroughProfiler"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class PassThroughProfiler(Callback):
    """A profiler that records nothing; it hooks into nothing, so it costs nothing."""

    def __init__(self, dirpath: Any = None, filename: str | None = None) -> None:
        self.dirpath = dirpath
        self.filename = filename

    def wrap(self, name: str, owner: str, fn: Any) -> Any:
        return fn

    def summary(self) -> str:
        return ""
