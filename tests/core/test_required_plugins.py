"""``required_plugins``: a stack names the plugin distributions (and
versions) it needs; ``ember fit/validate/test/predict`` check them before
anything is built, through ``ember.plugin_manager.check_required``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ember.plugin_manager import RequiredPluginsError, check_required
from ember.stack import StackError, load_stack


def stack_dir(tmp_path: Path, text: str, name: str = "ember.toml") -> Path:
    (tmp_path / ".git").mkdir(exist_ok=True)  # keep discovery inside the test directory
    (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def load(tmp_path: Path, overrides: list[str] | None = None, environ: dict[str, str] | None = None):
    return load_stack(None, tmp_path, overrides or [], environ or {}, check=False)


# --------------------------------------------------------------------------- schema


def test_required_plugins_are_read(tmp_path: Path) -> None:
    stack = load(stack_dir(tmp_path, 'required_plugins = ["ember-foo>=1.2", "ember-bar", "ember-baz[x]>=2; python_version >= \'3\'"]\n'))
    assert stack.required_plugins == ["ember-foo>=1.2", "ember-bar", "ember-baz[x]>=2; python_version >= '3'"]
    assert stack.to_dict()["required_plugins"] == stack.required_plugins
    rows = {k: (v, o) for k, v, o in stack.resolved(trainer_cls=lambda: None)}
    assert rows["required_plugins"] == (stack.required_plugins, "ember.toml")


def test_required_plugins_default_to_none(tmp_path: Path) -> None:
    stack = load(stack_dir(tmp_path, "seed_everything = 1\n"))
    assert stack.required_plugins == [] and "required_plugins" not in stack.to_dict()
    assert stack.origin("required_plugins") == "default"


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (
            'required_plugins = "ember-foo"\n',
            "ember.toml: required_plugins:",
            'expected an array of requirement strings, as in required_plugins = ["ember-foo>=1.2"',
        ),
        ('required_plugins = ["ember-foo", 3]\n', "ember.toml: required_plugins[1]:", "expected a requirement string"),
        ('required_plugins = ["ember-foo", ""]\n', "ember.toml: required_plugins[1]:", "expected a requirement string"),
        ('required_plugins = ["ember-foo>>1.2"]\n', "ember.toml: required_plugins[0]:", '"ember-foo>>1.2" is not a valid requirement'),
        ('required_plugin = ["ember-foo"]\n', "ember.toml: required_plugin:", "Did you mean 'required_plugins'?"),
    ],
)
def test_schema_errors_name_the_key(tmp_path: Path, text: str, where: str, says: str) -> None:
    with pytest.raises(StackError) as info:
        load(stack_dir(tmp_path, text))
    message = str(info.value)
    assert message.startswith(where), message
    assert says in message, message


def test_pyproject_errors_name_the_tool_table(tmp_path: Path) -> None:
    stack_dir(tmp_path, '[tool.ember]\nrequired_plugins = ["ok", "bad version >"]\n', name="pyproject.toml")
    with pytest.raises(StackError, match=r"^pyproject.toml: tool.ember.required_plugins\[1\]: "):
        load(tmp_path)


def test_overridden_from_the_command_line_and_environment(tmp_path: Path) -> None:
    stack_dir(tmp_path, 'required_plugins = ["ember-foo"]\n')
    stack = load(tmp_path, ["--required_plugins", '["ember-bar>=2"]'])
    assert stack.required_plugins == ["ember-bar>=2"] and stack.origin("required_plugins") == "command line"
    stack = load(tmp_path, environ={"EMBER_REQUIRED_PLUGINS": '["ember-baz"]'})
    assert stack.required_plugins == ["ember-baz"] and stack.origin("required_plugins") == "environment (EMBER_REQUIRED_PLUGINS)"
    with pytest.raises(StackError, match=r"^environment \(EMBER_REQUIRED_PLUGINS\): required_plugins: expected an array"):
        load(tmp_path, environ={"EMBER_REQUIRED_PLUGINS": "ember-baz"})


# --------------------------------------------------------------------------- check_required


def test_satisfied_requirements_pass() -> None:
    check_required([])
    check_required(["pluggy>=1", "pytest", "PyTest>=1.0"])  # names are compared normalised


def test_marker_that_does_not_apply_is_skipped() -> None:
    check_required(["ember-not-installed-anywhere; python_version < '3'"])


def test_one_error_lists_every_problem_and_the_fix() -> None:
    with pytest.raises(RequiredPluginsError) as info:
        check_required(
            ["pluggy>=999", "ember-not-installed-anywhere>=1.2", "pytest", "ember-extra[fast]", "bad req (("],
            where="ember.toml: required_plugins",
        )
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == "ember.toml: required_plugins: 4 required plugins are not satisfied:"
    assert any(line.startswith("  - pluggy>=999: version ") and line.endswith(" is installed") for line in lines)
    assert "  - ember-not-installed-anywhere>=1.2: not installed" in lines
    assert "  - ember-extra[fast]: not installed" in lines
    assert any("'bad req ((' is not a valid requirement" in line for line in lines)
    assert not any("pytest:" in line for line in lines)
    assert lines[-1] == "  pip install 'pluggy>=999' 'ember-not-installed-anywhere>=1.2' 'ember-extra[fast]'"


def test_real_plugin_distribution_versions(with_dists: Path) -> None:
    check_required(["ember-dummy-plugin>=0.3,<0.4", "ember_dummy_plugin"])
    with pytest.raises(RequiredPluginsError, match=r"ember-dummy-plugin>=1: version 0\.3\.1 is installed"):
        check_required(["ember-dummy-plugin>=1"])


# --------------------------------------------------------------------------- ember fit / validate / test / predict

TINY = """
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember


class Tiny(ember.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2)
"""


def _ember(args: list[str], cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    code = f"import sys, json, ember.cli\nrc = ember.cli.main({args!r})\nprint(json.dumps({{'rc': rc, 'torch': 'torch' in sys.modules}}))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_run_commands_refuse_missing_plugins_before_building(tmp_path: Path, command: str) -> None:
    stack_dir(tmp_path, 'required_plugins = ["ember-not-installed-anywhere>=2", "pluggy>=999"]\n[model]\nclass_path = "tinymodel:Tiny"\n')
    (tmp_path / "tinymodel.py").write_text(TINY)
    proc = _ember([command], tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rc": 2, "torch": False}, proc.stderr  # refused before the model (or torch) was imported
    assert "error: ember.toml: required_plugins: 2 required plugins are not satisfied:" in proc.stderr
    assert "pip install 'ember-not-installed-anywhere>=2' 'pluggy>=999'" in proc.stderr


@pytest.mark.slow
def test_run_goes_ahead_when_satisfied(tmp_path: Path, ember_dists: Path) -> None:
    stack_dir(tmp_path, "")
    (tmp_path / "ember.toml").write_text(
        'required_plugins = ["ember-dummy-plugin>=0.3"]\n'
        '[model]\nclass_path = "tinymodel:Tiny"\n'
        "[trainer]\nenable_progress_bar = false\nenable_model_summary = false\nlogger = false\n"
        '[plugins]\ndisable = ["broken", "typo"]\n'
    )
    (tmp_path / "tinymodel.py").write_text(TINY)
    proc = _ember(["validate"], tmp_path, extra_path=ember_dists)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["rc"] == 0, proc.stderr
    assert "val_loss" in proc.stdout
    missing = _ember(["validate"], tmp_path)  # the same stack where the plugin is not installed
    assert json.loads(missing.stdout.strip().splitlines()[-1])["rc"] == 2
    assert "ember-dummy-plugin>=0.3: not installed" in missing.stderr
