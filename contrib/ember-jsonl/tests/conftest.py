"""Fixtures for ember-jsonl's own tests. They use ember's public API only and
need ember-jsonl installed (``pip install contrib/ember-jsonl``)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment for an ``ember`` subprocess, without plugin-loading overrides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
