"""ember-jsonl in ember's logger conformance suite (``ember.testing.LoggerConformance``).

:data:`SPEC` tells the suite how to build a :class:`JSONLinesLogger`, how to
read its file back (:func:`read_back`, through :func:`read_run`), and what a
SIGKILL may lose. ember-jsonl's own tests run the suite with it::

    from ember.testing import LoggerConformance
    from ember_jsonl.conformance import SPEC

    class TestJSONLinesLogger(LoggerConformance):
        spec = SPEC

Importing this module imports ember's test helpers (and pytest); the logger
itself does not need it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ember.testing import KillBound, LoggerSpec, Stored
from ember_jsonl.logger import JSONLinesLogger, read_run

__all__ = ["SPEC", "kill_bound", "make_logger", "read_back"]


def make_logger(save_dir: str, **options: Any) -> JSONLinesLogger:
    """The factory the suite calls (also in its child processes)."""
    return JSONLinesLogger(save_dir=save_dir, **options)


def read_back(handle: Any) -> Stored:
    """``metrics.jsonl`` of the run directory, record by record (a last line
    cut short by a killed writer is left out, as :func:`read_run` does)."""
    series: dict[str, list[tuple[int, float]]] = {}
    path = os.path.join(handle.log_dir, "metrics.jsonl")
    if os.path.exists(path):
        for record in read_run(path):
            for key, value in record["metrics"].items():
                series.setdefault(key, []).append((int(record["step"]), float(value)))
    return Stored(series)


def kill_bound(options: Mapping[str, Any]) -> KillBound:
    """A SIGKILL loses the records since the last append: fewer than
    ``flush_every``, none older than ``flush_secs`` (plus one logging interval)."""
    return KillBound(calls=int(options.get("flush_every", 50)) - 1, seconds=options.get("flush_secs", 5.0))


SPEC = LoggerSpec(
    name="jsonl",
    factory="ember_jsonl.conformance:make_logger",
    read_back=read_back,
    flush_options={"flush_every": 5, "flush_secs": 0.3},
    kill_bound=kill_bound,
)
