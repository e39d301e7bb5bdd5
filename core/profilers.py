"""Profilers under Lightning's names: ``from lightning.pytorch.profilers import X``
ports to ``from ember.profilers import X``. Imported lazily.

``Profiler`` is the base for custom profilers (``start``/``stop`` around
every hook implementation) and ``isinstance`` of it is true for every
profiler; ``PassThroughProfiler`` profiles nothing, as ``profiler=None`` does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from ember._lazy import lazy_exports

_EXPORTS = {
    "SimpleProfiler": "ember.plugins.profilers.simple",
    "AdvancedProfiler": "ember.plugins.profilers.advanced",
    "PyTorchProfiler": "ember.plugins.profilers.pytorch:TorchProfiler",  # Lightning's name
    "TorchProfiler": "ember.plugins.profilers.pytorch",
}
__all__ = sorted([*_EXPORTS, "PassThroughProfiler", "Profiler"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class _ProfilerMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        # Every object the trainer accepts as a profiler (it has ``wrap``) is a Profiler.
        return type.__instancecheck__(cls, obj) or (cls is Profiler and callable(getattr(obj, "wrap", None)))


class Profiler(metaclass=_ProfilerMeta):
    """Base for a custom profiler, in Lightning's shape: override
    :meth:`start` and :meth:`stop` (called with an action name around every
    hook implementation, ``"{hook}:{owner}"``) and :meth:`summary`.
    ``isinstance(p, Profiler)`` is true for every ember profiler."""

    def __init__(self, dirpath: str | os.PathLike[str] | None = None, filename: str | None = None) -> None:
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename

    def start(self, action_name: str) -> None:
        """An action begins."""

    def stop(self, action_name: str) -> None:
        """The action ends."""

    def summary(self) -> str:
        return ""

    @contextlib.contextmanager
    def profile(self, action_name: str) -> Iterator[None]:
        """``with profiler.profile("name"):`` times a block of your own."""
        self.start(action_name)
        try:
            yield
        finally:
            self.stop(action_name)

    def wrap(self, hook_name: str, owner: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """What the trainer calls once per run for each hook implementation;
        with :meth:`start`/:meth:`stop` not overridden nothing is wrapped."""
        if type(self).start is Profiler.start and type(self).stop is Profiler.stop:
            return fn
        action, start, stop = f"{hook_name}:{owner}", self.start, self.stop

        def timed(*args: Any, **kwargs: Any) -> Any:
            start(action)
            try:
                return fn(*args, **kwargs)
            finally:
                stop(action)

        return timed


class PassThroughProfiler(Profiler):
    """A profiler that records nothing; it wraps nothing, so it costs nothing."""
