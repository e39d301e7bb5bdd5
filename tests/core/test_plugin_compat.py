"""Plugins declare the ember versions they support with their ordinary
dependency (``dependencies = ["ember>=0.1,<0.2"]``); ember refuses to load one
whose range excludes the running version. ``ember-oldcompat-plugin``
(tests/dists) declares ``ember<0.1``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ember
from ember import plugin_versions
from ember.plugin_manager import AutoloadSettings, EmberPluginWarning, PluginManager
from ember.plugin_versions import declared_ember_requirement


@pytest.fixture
def with_compat(compat_dists: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(compat_dists))
    for var in ("EMBER_DISABLE_PLUGIN_AUTOLOAD", "EMBER_PLUGINS", "EMBER_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delitem(sys.modules, "ember_oldcompat_plugin", raising=False)
    return compat_dists


def load(settings: AutoloadSettings | None = None) -> PluginManager:
    pm = PluginManager()
    pm.load_entrypoints(settings or AutoloadSettings())
    return pm


def test_incompatible_plugin_is_refused_without_import(with_compat: Path) -> None:
    pm = load()
    assert not pm.has_plugin("oldcompat")
    assert "ember_oldcompat_plugin" not in sys.modules
    (failure,) = [f for f in pm.failures if f.name == "oldcompat"]
    assert (failure.distribution, failure.version, failure.target) == ("ember-oldcompat-plugin", "0.0.9", "ember_oldcompat_plugin")
    text = failure.describe()
    for part in (
        "'oldcompat'",
        "ember-oldcompat-plugin 0.0.9",
        "ember<0.1",
        f"this is ember {ember.__version__}",
        "pip install --upgrade ember-oldcompat-plugin",
        "pip install 'ember<0.1'",
        "EMBER_DISABLE_PLUGINS=oldcompat",
    ):
        assert part in text, (part, text)


def test_refusal_is_a_warning_not_a_crash(with_compat: Path) -> None:
    pm = load()
    with pytest.warns(EmberPluginWarning, match="supports ember<0.1"):
        pm.warn_failures()


def test_plugin_loads_into_an_ember_inside_its_range(with_compat: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_versions, "running_ember_version", lambda: "0.0.5")
    pm = load()
    assert pm.has_plugin("oldcompat") and not [f for f in pm.failures if f.name == "oldcompat"]
    assert "oldcompat" in pm.build_registry().names("callback")


def test_disabled_incompatible_plugin_is_not_reported(with_compat: Path) -> None:
    pm = load(AutoloadSettings(disable=["oldcompat"]))
    assert pm.failures == [] and "oldcompat" in pm.disabled


@pytest.mark.slow
def test_ember_plugins_lists_the_refusal(compat_dists: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(compat_dists), *filter(None, [os.environ.get("PYTHONPATH")])])
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "ember.cli", "plugins", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    report = json.loads(run("--json").stdout)
    (entry,) = [p for p in report["plugins"] if p["name"] == "oldcompat"]
    assert entry["status"] == "failed" and "ember<0.1" in entry["error"]
    assert "pip install 'ember<0.1'" in entry["fix"]
    text = run()
    assert "failed: oldcompat from ember-oldcompat-plugin 0.0.9" in text.stderr
    assert "Upgrade it to a release that supports ember" in text.stderr


@pytest.mark.parametrize(
    ("requires", "extras", "expected"),
    [
        (["torch>=2", "ember>=0.1,<0.2"], (), "ember<0.2,>=0.1"),
        (["Ember_>=0.1"], (), None),  # not a valid name: skipped, pip's business
        (["EMBER>=0.3"], (), "ember>=0.3"),
        (["ember<0.1; python_version < '3'"], (), None),  # marker false here
        (["ember<0.1; python_version >= '3'"], (), "ember<0.1"),
        (["ember>=9; extra == 'ember'"], ("ember",), "ember>=9"),  # under an extra: still the plugin's range
        (["ember>=9; extra == 'docs'"], (), None),
        (["not a requirement ((", "pluggy"], (), None),
        (None, (), None),
    ],
)
def test_declared_ember_requirement(requires: list[str] | None, extras: tuple[str, ...], expected: str | None) -> None:
    req = declared_ember_requirement(requires, extras)
    assert (None if req is None else f"{req.name.lower()}{req.specifier}") == expected


class _FakeMetadata:
    def get_all(self, key: str) -> None:
        return None


class _FakeDist:
    requires = ["ember>=0.2,<0.3"]
    metadata = _FakeMetadata()


class _FakeEntryPoint:
    name, value, dist = "x", "x_mod", _FakeDist()


@pytest.mark.parametrize(
    ("running", "fits"), [("0.2.0", True), ("0.2.0.dev3", True), ("0.2.5rc1", True), ("0.3.0.dev0", False), ("0.1.9", False)]
)
def test_development_builds_count_as_their_release(monkeypatch: pytest.MonkeyPatch, running: str, fits: bool) -> None:
    monkeypatch.setattr(plugin_versions, "running_ember_version", lambda: running)
    failure = plugin_versions.incompatibility(_FakeEntryPoint, "ember-x", "1.0")
    assert (failure is None) == fits
    if failure is not None:
        assert f"this is ember {running}" in failure.error
