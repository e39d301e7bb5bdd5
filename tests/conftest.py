"""Shared fixtures.

``ember_dists`` builds the test-only plugin distributions in ``tests/dists``
(``ember-dummy-plugin``, ``ember-broken-plugin``, ``ember-typo-plugin``) and
installs them with pip into a temporary directory, once per session. Tests
that want their entry points put that directory on ``sys.path`` (the
``with_dists`` fixture, undone after the test) or on ``PYTHONPATH`` for a
subprocess (``dists_env``); the development environment itself never sees
them.

The fast tier stays fast: a test that is not marked ``slow`` and whose call
takes longer than ``EMBER_FAST_TIER_LIMIT_S`` seconds (10 by default) fails,
with a message saying to speed it up or mark it ``@pytest.mark.slow``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DISTS_SOURCE = Path(__file__).parent / "dists"
DIST_NAMES = ("ember-dummy-plugin", "ember-broken-plugin", "ember-typo-plugin")
COMPAT_DIST_NAMES = ("ember-oldcompat-plugin",)
FAST_TIER_LIMIT_S = float(os.environ.get("EMBER_FAST_TIER_LIMIT_S", "10"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Fail a fast-tier test whose call phase ran past the limit."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.passed or item.get_closest_marker("slow") is not None:
        return
    if report.duration > FAST_TIER_LIMIT_S:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} took {report.duration:.1f} s, over the fast tier's {FAST_TIER_LIMIT_S:g} s "
            "(EMBER_FAST_TIER_LIMIT_S): make it faster or mark it @pytest.mark.slow"
        )


def _install_dists(names: tuple[str, ...], root: Path) -> Path:
    """Build ``names`` (folders of ``tests/dists``) from a copy and pip-install
    them into ``root / "site"``, which is returned."""
    sources = root / "src"
    target = root / "site"
    # build from a copy: pip leaves build/ and *.egg-info next to the sources
    shutil.copytree(DISTS_SOURCE, sources, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "--quiet",
        "--target",
        str(target),
        *(str(sources / name) for name in names),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=240)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building the fixture distributions failed:\n{exc.stdout}\n{exc.stderr}")
    return target


@pytest.fixture(scope="session")
def ember_dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the three fixture distributions, installed
    (packages plus ``.dist-info`` with their ``ember.plugins`` entry points)."""
    return _install_dists(DIST_NAMES, tmp_path_factory.mktemp("ember_dists"))


@pytest.fixture(scope="session")
def compat_dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ember-oldcompat-plugin`` (declares ``ember<0.1``), installed on its own
    so that the tests of the three above do not see it."""
    return _install_dists(COMPAT_DIST_NAMES, tmp_path_factory.mktemp("compat_dists"))


@pytest.fixture
def with_dists(ember_dists: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture distributions are importable and their entry points visible
    in this process, for this test only."""
    monkeypatch.syspath_prepend(str(ember_dists))
    for var in ("EMBER_DISABLE_PLUGIN_AUTOLOAD", "EMBER_PLUGINS", "EMBER_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return ember_dists


@pytest.fixture
def dists_env(ember_dists: Path) -> dict[str, str]:
    """An environment for a subprocess that sees the fixture distributions."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ember_dists), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env
