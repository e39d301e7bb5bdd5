"""ember: a PyTorch trainer built as a tiny kernel plus plugins.

The public API is re-exported here. Attribute access is lazy so that
``import ember`` stays cheap and ``ember --help`` imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember._version import __version__

if TYPE_CHECKING:
    from ember.callback import Callback, Logger
    from ember.datamodule import DataModule
    from ember.errors import EXIT_PREEMPTED, Preempted
    from ember.module import Module
    from ember.plugin_manager import hookimpl
    from ember.seed import seed_everything
    from ember.trainer import Trainer

__all__ = [
    "EXIT_PREEMPTED",
    "Callback",
    "DataModule",
    "Logger",
    "Module",
    "Preempted",
    "Trainer",
    "__version__",
    "hookimpl",
    "seed_everything",
]

_LAZY = {
    "Callback": "ember.callback",
    "Logger": "ember.callback",
    "DataModule": "ember.datamodule",
    "EXIT_PREEMPTED": "ember.errors",
    "Preempted": "ember.errors",
    "Module": "ember.module",
    "hookimpl": "ember.plugin_manager",
    "seed_everything": "ember.seed",
    "Trainer": "ember.trainer",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ember' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
