"""The module the ``ember.plugins`` entry point names: registers callback ``"ema"``."""

from __future__ import annotations

from typing import Any

import ember
from ember_ema.ema import EMA


@ember.hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "ema", EMA)
