"""The ``ember`` command, run in subprocesses as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

# every test here runs ember in a subprocess, as a user would
pytestmark = pytest.mark.slow

HEAVY = ("torch", "tensorboard", "wandb", "deepspeed")

TINY = """
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember


class Tiny(ember.Module):
    def __init__(self, lr: float = 0.1, fail: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail:
            raise RuntimeError("training exploded on purpose")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class TinyData(ember.DataModule):
    def __init__(self, n: int = 32, batch_size: int = 8):
        super().__init__()
        x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
        self.ds = TensorDataset(x, x.sum(1, keepdim=True))
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=self.batch_size)

    val_dataloader = test_dataloader = predict_dataloader = train_dataloader
"""

STACK = """
seed_everything = 1
[model]
class_path = "tinymodel:Tiny"
init_args = { lr = 0.05 }
[data]
class_path = "tinymodel:TinyData"
[trainer]
max_epochs = 2
enable_progress_bar = false
enable_model_summary = false
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    env.update(extra)
    return env


def ember(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ember.cli", *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()  # keep stack discovery inside the test directory
    (tmp_path / "tinymodel.py").write_text(TINY)
    (tmp_path / "ember.toml").write_text(textwrap.dedent(STACK))
    return tmp_path


def assert_usage_error(proc: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- cheap commands


def _imports_after(argv: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    code = (
        "import contextlib, io, json, sys\n"
        "import ember.cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    rc = ember.cli.main({argv!r})\n"
        f"print(json.dumps({{'rc': rc, 'out': out.getvalue(), 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env or clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["fit", "--help"], ["config", "--help"], ["plugins", "--help"]])
def test_help_and_version_import_no_torch(argv: list[str], tmp_path: Path) -> None:
    result = _imports_after(argv, tmp_path)
    assert result["rc"] == 0 and result["heavy"] == [], result
    assert result["out"]


def test_help_lists_commands_and_overrides(tmp_path: Path) -> None:
    result = _imports_after(["--help"], tmp_path)
    for word in ("fit", "validate", "test", "predict", "config", "plugins", "--trainer.max_epochs", "EMBER_TRAINER__MAX_EPOCHS"):
        assert word in result["out"]


def test_console_script_help_importtime(tmp_path: Path) -> None:
    """Through the installed console script, with ``-X importtime``."""
    script = Path(sys.executable).parent / ("ember.exe" if os.name == "nt" else "ember")
    if not script.exists():
        pytest.skip("the ember console script is not installed in this environment")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--help"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "ember.cli" in imported
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_version(tmp_path: Path) -> None:
    from ember import __version__

    proc = ember("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"ember {__version__}"


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    proc = ember(cwd=tmp_path)
    assert proc.returncode == 2 and "usage: ember" in proc.stderr


def test_unknown_option_is_a_usage_error(project: Path) -> None:
    proc = ember("fit", "--no-such-flag", cwd=project)
    assert_usage_error(proc, "unrecognized option '--no-such-flag'", "usage: ember fit ")


def test_help_survives_broken_plugins(tmp_path: Path, dists_env: dict[str, str]) -> None:
    result = _imports_after(["--help"], tmp_path, env=dists_env)
    assert result["rc"] == 0 and result["heavy"] == []


# --------------------------------------------------------------------------- ember config


def test_config_shows_provenance(project: Path) -> None:
    env = clean_env(EMBER_TRAINER__ACCELERATOR="cpu", EMBER_SEED_EVERYTHING="5")
    proc = ember("config", "--trainer.max_epochs", "3", "--model.init_args.lr=0.5", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(" = ")[0]: line for line in proc.stdout.splitlines() if " = " in line}
    assert lines["trainer.max_epochs"].split("#")[0].strip() == "trainer.max_epochs = 3"
    assert lines["trainer.max_epochs"].endswith("# command line")
    assert lines["model.init_args.lr"].endswith("# command line")
    assert lines["trainer.accelerator"].endswith("# environment (EMBER_TRAINER__ACCELERATOR)")
    assert lines["seed_everything"].endswith("# environment (EMBER_SEED_EVERYTHING)")
    assert lines["model.class_path"].split("#")[0].strip() == 'model.class_path = "tinymodel:Tiny"'
    assert lines["model.class_path"].endswith("# ember.toml")
    assert lines["trainer.enable_progress_bar"].endswith("# ember.toml")
    assert lines["trainer.max_steps"].endswith("# default")  # the Trainer's defaults are listed too
    assert lines["plugins.autoload"].endswith("# default")
    first = proc.stdout.splitlines()[0]
    assert first.startswith("# stack: ") and first.endswith("ember.toml")
    # the comments line up
    columns = {line.index("  # ") for line in proc.stdout.splitlines() if "  # " in line and len(line.split("  # ")[0]) < 50}
    assert len(columns) == 1


def test_config_json(project: Path) -> None:
    proc = ember("config", "--json", "--trainer.max_epochs=4", cwd=project, env=clean_env(EMBER_DATA__INIT_ARGS__BATCH_SIZE="4"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["source"].endswith("ember.toml")
    assert data["stack"]["trainer"]["max_epochs"] == 4
    assert data["provenance"]["trainer.max_epochs"] == "command line"
    assert data["provenance"]["data.init_args.batch_size"] == "environment (EMBER_DATA__INIT_ARGS__BATCH_SIZE)"
    assert data["provenance"]["model.init_args.lr"] == "ember.toml"
    values = {v["key"]: v for v in data["values"]}
    assert values["data.init_args.batch_size"]["value"] == 4


def test_config_in_pyproject_and_explicit_config(project: Path) -> None:
    (project / "ember.toml").unlink()
    (project / "pyproject.toml").write_text('[project]\nname = "p"\n[tool.ember.trainer]\nmax_epochs = 9\n')
    proc = ember("config", cwd=project)
    assert proc.returncode == 0 and "trainer.max_epochs = 9" in proc.stdout and "# pyproject.toml" in proc.stdout
    (project / "alt.toml").write_text("[trainer]\nmax_epochs = 11\n")
    proc = ember("config", "--config", "alt.toml", cwd=project)
    assert proc.returncode == 0 and "trainer.max_epochs = 11" in proc.stdout and "# alt.toml" in proc.stdout


@pytest.mark.parametrize(
    "stack, args, env, parts",
    [
        (
            "[trainer]\nmax_epoch = 3\n",
            [],
            {},
            ["ember.toml: trainer.max_epoch: not an ember.Trainer argument", "Did you mean 'trainer.max_epochs'?"],
        ),
        ("[trainer]\nmax_epochs = 'x'\n", [], {}, ["ember.toml: trainer.max_epochs: expected int | None, got a string"]),
        ("[trainr]\nmax_epochs = 3\n", [], {}, ["ember.toml: trainr: unknown key", "Did you mean 'trainer'?"]),
        (
            "[model]\nclass_path = 'tinymodel:Tinny'\n",
            [],
            {},
            ["ember.toml: model.class_path = 'tinymodel:Tinny': cannot import", "Did you mean tinymodel:Tiny?"],
        ),
        (
            "[model]\nclass_path = 'tinymodl:Tiny'\n",
            [],
            {},
            ["ember.toml: model.class_path = 'tinymodl:Tiny'", "no module named 'tinymodl'"],
        ),
        (
            "[model]\nclass_path = 'tinymodel:Tiny'\ninit_args = { lrr = 1 }\n",
            [],
            {},
            ["ember.toml: model.init_args.lrr: tinymodel:Tiny takes no argument 'lrr'", "Did you mean 'model.init_args.lr'?"],
        ),
        (
            "[[callbacks]]\nname = 'model_chekpoint'\n",
            [],
            {},
            ["ember.toml: callbacks[0].name: no callback named 'model_chekpoint'", "Did you mean 'model_checkpoint'?"],
        ),
        ("[[loggers]]\nname = 'cvs'\n", [], {}, ["ember.toml: loggers[0].name: no logger named 'cvs'", "Did you mean 'csv'?"]),
        ("[trainer\n", [], {}, ["ember.toml: not valid TOML"]),
        ("", ["--trainer.max_epoch", "3"], {}, ["command line: trainer.max_epoch: not an ember.Trainer argument"]),
        ("", ["--trainer.max_epochs"], {}, ["command line (--trainer.max_epochs): needs a value"]),
        ("", [], {"EMBER_TRAINER__MAX_EPOCH": "3"}, ["environment (EMBER_TRAINER__MAX_EPOCH): trainer.max_epoch"]),
        (
            "",
            [],
            {"EMBER_MODLE__CLASS_PATH": "x:Y"},
            ["environment (EMBER_MODLE__CLASS_PATH): modle.class_path: unknown section 'modle'", "Did you mean 'model'?"],
        ),
        ("", ["--config", "missing.toml"], {}, ["--config missing.toml", "does not exist"]),
    ],
)
def test_config_errors(project: Path, stack: str, args: list[str], env: dict[str, str], parts: list[str]) -> None:
    if stack:
        (project / "ember.toml").write_text(stack)
    assert_usage_error(ember("config", *args, cwd=project, env=clean_env(**env)), *parts)


# --------------------------------------------------------------------------- fit / validate / test / predict


def test_fit_prints_metrics(project: Path) -> None:
    proc = ember("fit", "--trainer.max_epochs", "1", cwd=project)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    table = dict(line.split() for line in lines[header + 2 :])
    assert set(table) >= {"train_loss", "val_loss"}
    assert float(table["val_loss"]) >= 0


def test_validate_test_and_predict(project: Path) -> None:
    proc = ember("validate", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "val_loss" in proc.stdout
    proc = ember("test", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "test_loss" in proc.stdout and proc.stdout.count("test_loss") == 1
    proc = ember("predict", "--output", "out/preds.pt", cwd=project)
    assert proc.returncode == 0, proc.stderr
    import torch

    predictions = torch.load(project / "out" / "preds.pt")
    assert len(predictions) == 4 and predictions[0].shape == (8, 1)


@pytest.mark.slow
def test_fit_then_resume_from_checkpoint(project: Path) -> None:
    proc = ember("fit", "--trainer.max_epochs", "1", "--trainer.default_root_dir", "run", cwd=project)
    assert proc.returncode == 0, proc.stderr
    checkpoints = sorted((project / "run").rglob("*.ckpt"))
    assert checkpoints, list((project / "run").rglob("*"))
    proc = ember("fit", "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoints[-1]), cwd=project)
    assert proc.returncode == 0, proc.stderr


def test_fit_without_model_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    assert_usage_error(ember("fit", cwd=tmp_path), "no [model] configured", "--model.class_path")


def test_fit_with_unknown_strategy_is_a_usage_error(project: Path) -> None:
    proc = ember("fit", "--trainer.strategy", "singel_device", cwd=project)
    assert_usage_error(proc, "singel_device", "Did you mean 'single_device'?")


def test_training_error_exits_1_with_traceback(project: Path) -> None:
    proc = ember("fit", "--model.init_args.fail", "true", cwd=project)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" in proc.stderr and "training exploded on purpose" in proc.stderr
    assert "error: `ember fit` failed" in proc.stderr


def test_fit_imports_no_heavy_optional_library(project: Path) -> None:
    # TensorBoard is the default logger where it is installed (as in Lightning), so it is the one
    # optional library a default `ember fit` loads; the others load only when a stack names them.
    code = (
        "import sys, ember.cli\nrc = ember.cli.main(['fit', '--trainer.max_epochs', '1'])\n"
        "print('HEAVY', rc, [m for m in ('wandb', 'mlflow', 'deepspeed', 'matplotlib', 'onnx') if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, env=clean_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY 0 []" in proc.stdout


def test_fit_with_the_dummy_plugin(project: Path, dists_env: dict[str, str]) -> None:
    (project / "ember.toml").write_text(
        textwrap.dedent(STACK)
        + textwrap.dedent(
            """
            strategy = "dummy_strategy"
            [plugins]
            disable = ["broken", "typo"]
            [[callbacks]]
            name = "dummy_callback"
            init_args = { path = "counts.json" }
            [[loggers]]
            name = "dummy_logger"
            init_args = { path = "metrics.jsonl" }
            """
        ).replace('strategy = "dummy_strategy"\n', "")
    )
    # strategy belongs in [trainer]: give it from the environment
    env = {**dists_env, "EMBER_TRAINER__STRATEGY": "dummy_strategy", "EMBER_DUMMY_MARKER": str(project / "marker.txt")}
    proc = ember("fit", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "EmberPluginWarning" not in proc.stderr  # broken and typo were disabled by the stack
    events = (project / "marker.txt").read_text().split()
    assert "dummy_strategy.setup_module" in events and "dummy_plugin.on_fit_start" in events
    counts = json.loads((project / "counts.json").read_text())
    assert counts["on_train_batch_end"] == 8 and counts["on_train_epoch_end"] == 2 and counts["teardown"] == 1
    records = [json.loads(line) for line in (project / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r.get("metrics", {}) for r in records)


def test_fit_reports_broken_plugins_but_trains(project: Path, dists_env: dict[str, str]) -> None:
    proc = ember("fit", "--trainer.max_epochs", "1", cwd=project, env=dists_env)
    assert proc.returncode == 0, proc.stderr
    assert "ember-broken-plugin 1.2.0" in proc.stderr and "Did you mean 'on_train_batch_end'?" in proc.stderr


# --------------------------------------------------------------------------- ember plugins


def test_plugins_lists_builtins(tmp_path: Path) -> None:
    proc = ember("plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ember.plugins.strategies.single_device" in proc.stdout
    assert "strategy single_device" in proc.stdout and "register_roles" in proc.stdout


def test_plugins_with_broken_and_typo_plugins(tmp_path: Path, dists_env: dict[str, str]) -> None:
    proc = ember("plugins", cwd=tmp_path, env=dists_env)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line and not line.startswith(" ")}
    assert rows["dummy"][1:] == ["entrypoint", "ember-dummy-plugin", "0.3.1", "loaded"]
    assert rows["broken"][1:] == ["entrypoint", "ember-broken-plugin", "1.2.0", "failed"]
    assert rows["typo"][1:] == ["entrypoint", "ember-typo-plugin", "0.0.7", "failed"]
    assert "hooks: on_fit_start, register_roles" in proc.stdout
    assert "callback dummy_callback" in proc.stdout and "logger dummy_logger" in proc.stdout and "strategy dummy_strategy" in proc.stdout
    assert "error: ImportError: no module named 'not_there'" in proc.stdout
    assert "Did you mean 'on_train_batch_end'?" in proc.stdout
    assert "failed: broken from ember-broken-plugin 1.2.0" in proc.stderr


def test_plugins_json(tmp_path: Path, dists_env: dict[str, str]) -> None:
    proc = ember("plugins", "--json", cwd=tmp_path, env=dists_env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    plugins = {p["name"]: p for p in report["plugins"]}
    dummy = plugins["dummy"]
    assert (dummy["kind"], dummy["distribution"], dummy["version"], dummy["status"]) == (
        "entrypoint",
        "ember-dummy-plugin",
        "0.3.1",
        "loaded",
    )
    assert dummy["hooks"] == ["on_fit_start", "register_roles"]
    assert {(r["kind"], r["name"]) for r in dummy["roles"]} == {
        ("callback", "dummy_callback"),
        ("logger", "dummy_logger"),
        ("strategy", "dummy_strategy"),
    }
    failures = {f["name"]: f for f in report["failures"]}
    assert failures["broken"]["distribution"] == "ember-broken-plugin" and failures["broken"]["version"] == "1.2.0"
    assert "on_train_batch_end" in failures["typo"]["error"]
    assert plugins["ember.plugins.precision.true_precision"]["kind"] == "builtin"


def test_plugins_shows_disabled_and_not_loaded(tmp_path: Path, dists_env: dict[str, str]) -> None:
    env = {**dists_env, "EMBER_DISABLE_PLUGINS": "broken,model_summary", "EMBER_DISABLE_PLUGIN_AUTOLOAD": "1", "EMBER_PLUGINS": "dummy"}
    report = json.loads(ember("plugins", "--json", cwd=tmp_path, env=env).stdout)
    plugins = {p["name"]: p for p in report["plugins"]}
    assert plugins["broken"]["status"] == "disabled" and plugins["broken"]["distribution"] == "ember-broken-plugin"
    assert plugins["ember.plugins.callbacks.model_summary"]["status"] == "disabled"
    assert plugins["typo"]["status"] == "not loaded" and "allow-list" in plugins["typo"]["reason"]
    assert plugins["dummy"]["status"] == "loaded"
    assert report["failures"] == []
    text = ember("plugins", cwd=tmp_path, env=env).stdout
    assert "disabled: broken, model_summary" in text and "autoload: off" in text


def test_plugins_respects_the_stack(tmp_path: Path, dists_env: dict[str, str]) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "ember.toml").write_text('[plugins]\ndisable = ["broken", "typo"]\n')
    report = json.loads(ember("plugins", "--json", cwd=tmp_path, env=dists_env).stdout)
    assert report["failures"] == [] and report["settings"]["disable"] == ["broken", "typo"]


def test_plugins_survives_a_broken_stack(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "ember.toml").write_text("[trainer\n")
    proc = ember("plugins", cwd=tmp_path)
    assert proc.returncode == 0 and "note: the stack's [plugins] section was not applied" in proc.stderr


def test_plugins_takes_no_overrides(tmp_path: Path) -> None:
    assert_usage_error(ember("plugins", "--trainer.max_epochs", "1", cwd=tmp_path), "takes no stack overrides")


def test_error_in_user_init_exits_1_with_traceback(project: Path) -> None:
    proc = ember("fit", "--data.init_args.n", "-3", cwd=project)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" in proc.stderr and "negative dimension" in proc.stderr
    assert "error: creating the stack's model, data module, callbacks or loggers failed" in proc.stderr
