"""The module the ``ember.plugins`` entry point names: registers logger ``"jsonl"``."""

from __future__ import annotations

from typing import Any

import ember
from ember_jsonl.logger import JSONLinesLogger


@ember.hookimpl
def register_roles(registry: Any) -> None:
    registry.add("logger", "jsonl", JSONLinesLogger)
