"""The compatibility corpus: each module in ``corpus/`` is trained under ember
and under Lightning (a test-only dependency) on CPU, with the same seed and
the same synthetic data, and must end bit for bit the same: weights compared
with ``torch.equal``, and the ``validate``/``test``/``predict`` outputs and
recorded values equal (``atol = rtol = 0``)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from corpus import MODULES
from frameworks import ember_fw, lightning

pytest.importorskip("torchmetrics", reason="torchmetrics is a test dependency (pip install -e '.[dev]')")
LIGHTNING = lightning()
pytestmark = pytest.mark.skipif(LIGHTNING is None, reason="Lightning is not installed (pip install -e '.[dev]')")


def assert_same(ours: Any, theirs: Any, where: str = "") -> None:
    """Exact equality through dicts, lists, tuples, tensors and numbers."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"{where}: ember gave {type(ours).__name__}, Lightning a tensor"
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (
            f"{where}: {ours.shape}/{ours.dtype} vs {theirs.shape}/{theirs.dtype}"
        )
        assert torch.equal(ours, theirs), f"{where}: values differ (max |diff| {(ours.double() - theirs.double()).abs().max().item():.3g})"
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{where}: ember gave {type(ours).__name__}"
        assert sorted(ours) == sorted(theirs), f"{where}: keys differ: ember {sorted(ours)} vs Lightning {sorted(theirs)}"
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), f"{where}: {ours!r} vs {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, float) and math.isnan(theirs):
        assert isinstance(ours, float) and math.isnan(ours), f"{where}: {ours!r} vs nan"
    else:
        assert ours == theirs, f"{where}: ember {ours!r} vs Lightning {theirs!r}"


def _param(name: str) -> Any:
    slow = getattr(importlib.import_module(f"corpus.{name}"), "SLOW", False)
    return pytest.param(name, marks=[pytest.mark.slow] if slow else [])


def test_corpus_has_the_patterns_the_issue_lists() -> None:
    assert len(MODULES) >= 12, MODULES


@pytest.mark.parametrize("name", [_param(n) for n in MODULES])
def test_corpus_module_matches_lightning(name: str, tmp_path: Path) -> None:
    case = importlib.import_module(f"corpus.{name}")
    ours = case.run(ember_fw(), tmp_path / "ember")
    theirs = case.run(LIGHTNING, tmp_path / "lightning")
    assert ours.keys() == theirs.keys()
    assert "weights" in ours
    assert_same(ours, theirs, name)
