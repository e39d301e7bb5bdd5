"""The test tiers hold: the README's command runs the fast tier, a fast-tier
test that runs too long fails, and the slow tier is reachable by marker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # ember depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CONFTEST = ROOT / "tests" / "conftest.py"

pytest_plugins = ["pytester"]


def _pytester_with_root_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow tier\naddopts = -m 'not slow'\n")


def test_default_run_is_the_fast_tier() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    assert "-m 'not slow'" in options["addopts"]


def test_a_long_fast_tier_test_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_FAST_TIER_LIMIT_S", "0.05")
    _pytester_with_root_conftest(pytester)
    pytester.makepyfile(
        """
        import time
        import pytest

        def test_quick():
            pass

        def test_long_unmarked():
            time.sleep(0.3)

        @pytest.mark.slow
        def test_long_marked():
            time.sleep(0.3)
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_long_unmarked took * s, over the fast tier's 0.05 s*mark it @pytest.mark.slow*"])

    slow = pytester.runpytest_subprocess("-m", "slow")
    slow.assert_outcomes(passed=1, deselected=2)  # the slow tier has no time limit
