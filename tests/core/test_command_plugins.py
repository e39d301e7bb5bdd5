"""Plugins add ``ember`` subcommands through the ``add_commands`` hook: ember's
own (fsdp's ``checkpoint consolidate``) and third-party ones found as
``ember.commands`` entry points of an installed distribution."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from ember.cli import main
from ember.commands.registry import BUILTIN_COMMAND_PLUGINS

HELLO = """
import ember


@ember.hookimpl
def add_commands(subparsers):
    p = subparsers.add_parser("hello", help="greet someone")
    p.add_argument("name")
    p.set_defaults(run=run)


def run(args):
    print(f"hello {args.name}")
    return 3
"""

BROKEN = """
import ember


@ember.hookimpl
def add_commands(subparsers):
    raise RuntimeError("no parser today")
"""


def _install(site: Path, dist: str, module: str, source: str) -> None:
    """A distribution as pip leaves it: the module and its .dist-info with an entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\nRequires-Dist: ember\n")
    (info / "entry_points.txt").write_text(f"[ember.commands]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for name in ("EMBER_DISABLE_PLUGINS", "EMBER_PLUGINS", "EMBER_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield site
    for module in ("ember_hello_cmd", "ember_broken_cmd"):
        sys.modules.pop(module, None)


def test_fsdp_consolidate_comes_from_the_fsdp_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert BUILTIN_COMMAND_PLUGINS == ("ember.plugins.strategies.fsdp_consolidate",)
    assert main(["checkpoint", "--help"]) == 0
    assert "consolidate" in capsys.readouterr().out
    assert main(["checkpoint", "consolidate", "missing_dir", "out.ckpt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'missing_dir' is not a directory"), err


def test_disabling_the_fsdp_plugin_removes_its_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_DISABLE_PLUGINS", "fsdp_consolidate")
    assert main(["checkpoint", "--help"]) == 0
    assert "consolidate" not in capsys.readouterr().out


def test_a_third_party_command(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _install(site, "ember-hello-cmd", "ember_hello_cmd", HELLO)
    assert main(["--help"]) == 0
    assert "greet someone" in capsys.readouterr().out
    assert main(["hello", "world"]) == 3
    assert capsys.readouterr().out == "hello world\n"
    assert main(["hello", "world", "--trainer.max_epochs", "2"]) == 2  # plugin commands take no stack overrides
    assert "takes no stack overrides" in capsys.readouterr().err


def test_a_broken_command_plugin_is_one_warning(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _install(site, "ember-broken-cmd", "ember_broken_cmd", BROKEN)
    _install(site, "ember-hello-cmd", "ember_hello_cmd", HELLO)
    assert main(["hello", "you"]) == 3
    captured = capsys.readouterr()
    assert captured.out == "hello you\n"
    assert (
        "warning: plugin 'ember_broken_cmd' (distribution ember-broken-cmd 1.0): add_commands raised RuntimeError: no parser today"
        in captured.err
    )
    assert "Traceback" not in captured.err


def test_the_kernel_does_not_import_the_commands() -> None:
    """The commands are tools beside the kernel: only ``ember.cli`` (the
    console script's entry point) and the commands themselves import them."""
    import ast

    core = Path(__file__).resolve().parents[2] / "core"
    found = []
    for path in core.rglob("*.py"):
        if "commands" in path.relative_to(core).parts or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.relative_to(core)}:{node.lineno}" for n in names if n == "ember.commands" or n.startswith("ember.commands.")]
    assert found == []
