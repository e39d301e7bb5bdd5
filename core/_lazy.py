"""Lazy re-exports for the Lightning-shaped namespaces (``ember.callbacks``, ...).

Each namespace maps public names to the module that defines them; a name is
imported on first access, so ``import ember.callbacks`` imports no plugin.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(namespace: str, table: dict[str, str], module_globals: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for a module whose names live in
    ``table`` (``name -> "module"`` or ``"module:attribute"``)."""

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {namespace!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        module_globals[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(module_globals) | set(table))

    return __getattr__, __dir__
