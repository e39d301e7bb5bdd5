"""Fixtures for ember-jsonl's own tests. They use ember's public API only and
need ember-jsonl installed (``pip install contrib/ember-jsonl``)."""

from __future__ import annotations

import os

import pytest

try:
    import ember_jsonl  # noqa: F401  (the installed distribution, not the source tree)
except ImportError as exc:  # pragma: no cover - a usage error, reported by pytest
    raise pytest.UsageError("ember-jsonl is not installed: run `pip install ./contrib/ember-jsonl` first.") from exc


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment for an ``ember`` subprocess, without plugin-loading overrides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
