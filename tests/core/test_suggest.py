"""One did-you-mean for every message: ``ember.suggest``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ember.suggest import closest, did_you_mean

ROOT = Path(__file__).resolve().parents[2]


def test_closest_and_did_you_mean() -> None:
    assert closest("val_los", ["train_loss", "val_loss"]) == "val_loss"
    assert closest("zzz", ["val_loss"]) is None
    assert closest(3, [30, 4]) in {"30", "4"}  # compared as strings
    assert did_you_mean("max_epoch", ["max_epochs", "max_steps"]) == " Did you mean 'max_epochs'?"
    assert did_you_mean("max_epoch", ["max_epochs"], prefix="trainer.") == " Did you mean 'trainer.max_epochs'?"
    assert did_you_mean("zzz", ["val_loss"]) == ""


def _sources() -> list[Path]:
    paths = [*(ROOT / "core").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    paths += [p for p in (ROOT / "contrib").rglob("*.py") if "tests" not in p.parts]
    return [p for p in paths if p.name != "suggest.py" and "templates" not in p.parts]


@pytest.mark.parametrize("name", ["closest", "did_you_mean"])
def test_no_second_home(name: str) -> None:
    """No module defines its own did-you-mean or calls difflib's matcher: they
    import ``ember.suggest`` (a re-export such as ``ember.roles.closest`` is fine)."""
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.lstrip("_") == name:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} defines {node.name}")
            if isinstance(node, ast.Attribute) and node.attr == "get_close_matches":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls difflib.get_close_matches")
    assert found == []
