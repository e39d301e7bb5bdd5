"""``ember new plugin NAME``: the generated distribution installs with pip,
its own tests pass, and ``ember plugins`` lists it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ember.cli import main
from ember.commands import new as scaffold


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBER_", "PYTEST_"))}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


@pytest.mark.slow
def test_generated_plugin_installs_passes_its_tests_and_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "src" / "ember-best-loss"
    assert main(["new", "plugin", "best-loss", "--dir", str(dest)]) == 0
    assert "pip install -e ." in capsys.readouterr().out
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "ember_best_loss/__init__.py",
        "ember_best_loss/callbacks.py",
        "ember_best_loss/plugin.py",
        "pyproject.toml",
        "tests/test_plugin.py",
    ]
    for path in dest.rglob("*"):
        if path.is_file():
            assert "__EMBER_" not in path.read_text(), path
    pyproject = (dest / "pyproject.toml").read_text()
    assert 'dependencies = ["ember>=0.1,<1"]' in pyproject
    assert 'best_loss = "ember_best_loss.plugin"' in pyproject

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
        ]
        + ["--target", str(target), str(dest)],
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=dest,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout

    listed = subprocess.run(
        [sys.executable, "-m", "ember.cli", "plugins", "--json"],
        cwd=tmp_path,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(listed.stdout)
    (entry,) = [p for p in report["plugins"] if p["name"] == "best_loss"]
    assert (entry["status"], entry["distribution"], entry["version"]) == ("loaded", "ember-best-loss", "0.1.0")
    assert {"kind": "callback", "name": "best_loss"} in entry["roles"]


@pytest.mark.parametrize(
    ("name", "dist", "package", "entry_point", "cls"),
    [
        ("best-loss", "ember-best-loss", "ember_best_loss", "best_loss", "BestLossCallback"),
        ("ember-best-loss", "ember-best-loss", "ember_best_loss", "best_loss", "BestLossCallback"),
        ("Grad_Norm", "ember-grad-norm", "ember_grad_norm", "grad_norm", "GradNormCallback"),
        ("ema", "ember-ema", "ember_ema", "ema", "EmaCallback"),
    ],
)
def test_names(name: str, dist: str, package: str, entry_point: str, cls: str) -> None:
    names = scaffold.plugin_names(name)
    assert (names.distribution, names.package, names.entry_point, names.role, names.class_name) == (
        dist,
        package,
        entry_point,
        entry_point,
        cls,
    )


@pytest.mark.parametrize(("version", "expected"), [("0.1.0", "ember>=0.1,<1"), ("1.4.2", "ember>=1.4,<2"), ("2.0.0rc1", "ember>=2.0,<3")])
def test_requirement_follows_the_running_version(version: str, expected: str) -> None:
    assert scaffold.ember_requirement(version) == expected


@pytest.mark.parametrize("bad", ["", "1abc", "has space", "a--b", "ember", "x!", "class"])
def test_bad_names_are_refused(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "plugin", bad, "--dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new", "plugin", "x", "--dir", str(tmp_path)]) == 2
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_default_directory_is_the_distribution_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", "plugin", "lr-finder"]) == 0
    assert (tmp_path / "ember-lr-finder" / "ember_lr_finder" / "plugin.py").is_file()


def test_templates_ship_as_package_data() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: ember depends on tomli there
        import tomli as tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["ember"]
    root = scaffold.TEMPLATES.parent  # the ember package
    shipped = {path for pattern in patterns for path in root.glob(pattern)}
    templates = scaffold.template_files("plugin")
    assert templates and set(templates) <= shipped
