"""Test fixture: a third-party ember plugin, installed as a real distribution
(``ember-dummy-plugin``) with an ``ember.plugins`` entry point.

It registers three named roles and implements one hook directly:

* callback ``dummy_callback`` (:class:`HookCounter`): counts every hook it sees;
* logger ``dummy_logger`` (:class:`JsonLinesLogger`): writes metrics as JSON lines;
* strategy ``dummy_strategy`` (:class:`ember_dummy_plugin.strategy.DummyStrategy`):
  the built-in single-device strategy, marked so a test can tell it ran;
* hook ``on_fit_start``, implemented with ``@ember.hookimpl``.

When ``EMBER_DUMMY_MARKER`` names a file, each of these appends a line to it,
so a test running ember in a subprocess can see what happened.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import ember
from ember import hookspecs
from ember.callback import Callback, Logger

__version__ = "0.3.1"

#: how many times this plugin's own ``on_fit_start`` fired in this process
FIT_STARTS = 0


def mark(event: str) -> None:
    """Append ``event`` to the file named by ``EMBER_DUMMY_MARKER``, if set."""
    path = os.environ.get("EMBER_DUMMY_MARKER")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(event + "\n")


def _hook_names() -> list[str]:
    return sorted(n for n in vars(Callback) if hasattr(getattr(hookspecs, n, None), "ember_spec"))


def _counting(name: str):
    def hook(self: HookCounter, *args: Any) -> None:
        self.counts[name] += 1
        if name == "teardown" and self.path:
            with open(self.path, "w", encoding="utf-8") as fh:
                json.dump(dict(self.counts), fh, indent=1, sort_keys=True)

    hook.__name__ = hook.__qualname__ = name
    return hook


class HookCounter(Callback):
    """Counts the hooks it receives (``self.counts``: hook name -> calls). With
    ``path``, writes the counts as JSON at every ``teardown``."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        mark("dummy_callback.created")

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counts = Counter(state_dict.get("counts", {}))


for _name in _hook_names():
    setattr(HookCounter, _name, _counting(_name))
del _name


class JsonLinesLogger(Logger):
    """Writes each ``log_metrics`` call as one JSON line: ``{"step": 3, "metrics": {...}}``;
    hyperparameters as ``{"hparams": {...}}``."""

    def __init__(self, path: str = "dummy_metrics.jsonl") -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        mark("dummy_logger.created")

    @property
    def name(self) -> str:
        return "dummy"

    def _write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=repr, sort_keys=True) + "\n")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write({"step": step, "metrics": {k: float(v) for k, v in metrics.items()}})

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self._write({"hparams": params})


@ember.hookimpl
def register_roles(registry: Any) -> None:
    from ember_dummy_plugin.strategy import DummyStrategy  # imports torch: only when roles are wanted

    registry.add("callback", "dummy_callback", HookCounter)
    registry.add("logger", "dummy_logger", JsonLinesLogger)
    registry.add("strategy", "dummy_strategy", DummyStrategy)


@ember.hookimpl
def on_fit_start(trainer: Any) -> None:
    global FIT_STARTS
    FIT_STARTS += 1
    mark("dummy_plugin.on_fit_start")
