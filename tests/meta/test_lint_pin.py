"""CI lints with the ruff version pinned in the dev extra (``.ci/run``); ``nox -s lint`` must install that same version."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_nox_lint_installs_the_pinned_ruff() -> None:
    pinned = re.findall(r'"(ruff==[^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert len(pinned) == 1, "pyproject.toml pins ruff once, in the dev extra"
    assert f'session.install("{pinned[0]}")' in (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert "python -m ruff check" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
