"""Plugins add top-level stack keys through ``add_commands(stack_keys)``: an
installed distribution (an ``ember.commands`` entry point, found by the plugin
manager like any other) declares ``[alerts]``; ``ember config`` shows it with
its origin, ``ember fit`` hands it to the plugin's object for the run, a bad
value names the key and the plugin, and an unknown key stays a one-line error
with a did-you-mean."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from ember.cli import main
from ember.commands.registry import plugin_stack_keys
from ember.stack import StackError, StackKeys, build, load_stack

ALERTS = """
import ember


class AlertsPlugin:
    def __init__(self, level, file="alerts.log"):
        self.level, self.file = level, file

    @ember.hookimpl
    def on_fit_end(self, trainer, module):
        with open(self.file, "a") as f:
            f.write(f"{self.level}: fit ended at step {trainer.global_step}\\n")


def check(value):
    if not isinstance(value, dict) or "level" not in value or set(value) - {"level", "file"}:
        raise ValueError("expected a table with level and optionally file")
    if value["level"] not in ("info", "error"):
        raise ValueError(f"level must be 'info' or 'error', not {value['level']!r}")
    return value


@ember.hookimpl
def add_commands(stack_keys):
    stack_keys.add("alerts", help="where run alerts go", check=check, build=lambda value: AlertsPlugin(**value))
"""

STACK = """
[model]
class_path = "ember.testing:TinyModule"

[trainer]
max_epochs = 2
enable_progress_bar = false
enable_model_summary = false
enable_checkpointing = false
logger = false

[alerts]
level = "info"
"""


def _install(site: Path, dist: str, module: str, source: str) -> None:
    """A distribution as pip leaves it: the module and its .dist-info with an entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\nRequires-Dist: ember\n")
    (info / "entry_points.txt").write_text(f"[ember.commands]\n{module} = {module}\n")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory (the cwd, with ``.git`` so discovery stops here) and
    a site directory on ``sys.path`` where the alerts distribution is installed."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for name in ("EMBER_DISABLE_PLUGINS", "EMBER_PLUGINS", "EMBER_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    (root / ".git").mkdir(parents=True)
    monkeypatch.chdir(root)
    _install(site, "ember-alerts", "ember_alerts", ALERTS)
    yield root
    sys.modules.pop("ember_alerts", None)


def test_config_shows_the_plugin_key_with_its_origin(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "ember.toml").write_text(STACK)
    monkeypatch.setenv("EMBER_ALERTS__FILE", "env.log")
    assert main(["config", "--alerts.level", "error"]) == 0
    out = capsys.readouterr().out
    assert 'alerts.level = "error"' in out and "# command line" in out.split('alerts.level = "error"')[1].splitlines()[0]
    assert "# environment (EMBER_ALERTS__FILE)" in out.split('alerts.file = "env.log"')[1].splitlines()[0]
    assert main(["config", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["stack"]["alerts"] == {"level": "info", "file": "env.log"}
    assert payload["provenance"]["alerts.level"] == "ember.toml"


def test_fit_hands_the_value_to_the_plugin(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "ember.toml").write_text(STACK)
    assert main(["fit", "--alerts.file", "fit.log"]) == 0, capsys.readouterr().err
    assert (project / "fit.log").read_text() == "info: fit ended at step 8\n"  # 2 epochs x 4 batches of TinyModule


def test_a_bad_value_names_the_key_and_the_plugin(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "ember.toml").write_text(STACK.replace('level = "info"', 'level = "loud"'))
    assert main(["config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ember.toml: alerts: level must be 'info' or 'error', not 'loud'; alerts is plugin 'ember_alerts'"), err
    assert len(err.splitlines()) == 1


def test_an_unknown_key_is_one_line_with_a_did_you_mean(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "ember.toml").write_text(STACK.replace("[alerts]", "[alert]"))
    assert main(["fit"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ember.toml: alert: unknown key;") and err.endswith("Did you mean 'alerts'?"), err
    assert "loggers, alerts." in err and len(err.splitlines()) == 1
    assert main(["config", "--alert.level", "info"]) == 2  # an override too
    assert "unknown section 'alert'" in capsys.readouterr().err


def test_without_the_plugin_the_key_is_unknown(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "ember.toml").write_text(STACK)
    monkeypatch.setenv("EMBER_DISABLE_PLUGINS", "ember_alerts")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "ember.toml: alerts: unknown key; the stack takes seed_everything" in err
    with pytest.raises(StackError, match="alerts: unknown key"):
        load_stack(cwd=project)  # the Python API accepts only ember's keys unless given the plugins'


def test_python_api_builds_the_plugin_object(project: Path) -> None:
    (project / "ember.toml").write_text(STACK)
    stack = load_stack(cwd=project, stack_keys=plugin_stack_keys())
    assert stack.plugin_keys == {"alerts": {"level": "info"}}
    _, _, kwargs = build(stack)
    (alerts,) = kwargs["plugins"]
    assert type(alerts).__name__ == "AlertsPlugin" and alerts.level == "info"


def test_declarations_are_checked() -> None:
    keys = StackKeys()
    with keys.declaring_for("p1"):
        keys.add("alerts", help="h", check=int)
        with pytest.raises(ValueError, match="one of ember's own stack keys"):
            keys.add("trainer", help="h")
        with pytest.raises(ValueError, match="TOML bare key"):
            keys.add("Bad-Name", help="h")
    with keys.declaring_for("p2"), pytest.raises(ValueError, match="already declared by plugin 'p1'"):
        keys.add("alerts", help="h")
    key = keys.get("alerts")
    assert key is not None and key.checked(3) == 3
    with pytest.raises(ValueError, match=r"expected an integer, got a boolean"):
        key.checked(True)


def test_a_broken_declaring_plugin_is_one_warning(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Path(sys.path[0])
    _install(site, "ember-broken-keys", "ember_broken_keys", "import ember\n\n@ember.hookimpl\ndef add_commands(stack_keys):\n    raise RuntimeError('no keys today')\n")
    try:
        (project / "ember.toml").write_text(STACK)
        assert main(["config"]) == 0
        err = capsys.readouterr().err
        assert "warning: plugin 'ember_broken_keys' (distribution ember-broken-keys 1.0): add_commands raised RuntimeError: no keys today" in err
    finally:
        sys.modules.pop("ember_broken_keys", None)
