"""One test trainer factory: ``ember.testing.quiet_trainer``.

A helper in ember's tests or a contrib distribution's tests that builds a
trainer (a function with ``trainer`` in its name) goes through
``ember.testing.quiet_trainer``, stating only what differs from its quiet
defaults, instead of listing its own copy of the defaults in an
``ember.Trainer(...)`` call. ``tests/compat`` is left out: it builds ember's
and Lightning's trainers side by side with the same arguments.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _files() -> list[Path]:
    found = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "contrib").glob("*/tests/**/*.py")]
    return [p for p in found if "compat" not in p.relative_to(ROOT).parts[:2] and "dists" not in p.parts]


def local_factories(source: str) -> list[str]:
    """``name:line`` of each non-test function with ``trainer`` in its name
    that calls ``ember.Trainer(...)`` or ``Trainer(...)`` itself."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and "trainer" in node.name.lower() and not node.name.startswith("test"):
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    func = call.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name == "Trainer":
                        hits.append(f"{node.name}:{node.lineno}")
                        break
    return hits


def test_the_checker_finds_a_local_factory() -> None:
    sample = (
        "import ember\n"
        "def _trainer(root):\n    return ember.Trainer(default_root_dir=root, logger=False)\n"
        "def quiet(root):\n    return ember.Trainer()\n"  # not named like a factory
        "def make_trainer(root):\n    return quiet_trainer(root, max_epochs=2)\n"
    )
    assert local_factories(sample) == ["_trainer:2"]


def test_no_local_trainer_factories() -> None:
    hits = [f"{p.relative_to(ROOT)}: {h}" for p in _files() for h in local_factories(p.read_text())]
    assert hits == [], "build test trainers with ember.testing.quiet_trainer(root, **what_differs)"
