"""Fixtures for ember-xla's tests. They need ember-xla installed
(``pip install ./contrib/ember-xla``); torch_xla is optional."""

from __future__ import annotations

import os

import pytest
from ember_xla import _runtime


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment for a subprocess: no plugin-loading overrides and no
    PJRT/XLA settings (an in-process torch_xla import sets PJRT_DEVICE)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("EMBER_", "PJRT_", "XLA_", "CPU_NUM_DEVICES", "TPU_"))}


@pytest.fixture
def no_cached_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what an earlier test (or import) learnt about torch_xla."""
    monkeypatch.setattr(_runtime, "_loaded", None)
    monkeypatch.setattr(_runtime, "_import_error", None)
    monkeypatch.setattr(_runtime, "_pjrt_device_defaulted", False)
