"""ember.stack: discovery, overrides, provenance, validation messages, build.

Most tests check ``[trainer]`` against a small stand-in Trainer class and
names against a hand-built registry, so that they exercise the stack alone;
a few use the real ``ember.Trainer`` and plugin registry.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from ember.roles import RoleRegistry
from ember.stack import (
    Stack,
    StackError,
    build,
    find_stack_file,
    format_key,
    import_class_path,
    load_stack,
    parse_key,
    parse_literal,
)


class FakeTrainer:
    def __init__(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        limit_train_batches: int | float | None = None,
        enable_checkpointing: bool = True,
        logger: bool | list[Any] | None = True,
        callbacks: list[Any] | None = None,
        plugins: list[Any] | None = None,
        disable_plugins: list[str] | None = None,
        autoload_plugins: bool | None = None,
        default_root_dir: str | None = None,
    ) -> None:
        pass


class NamedCallback:
    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 3) -> None:
        self.monitor, self.mode, self.patience = monitor, mode, patience


class NamedLogger:
    def __init__(self, save_dir: str = "logs") -> None:
        self.save_dir = save_dir


def make_registry() -> RoleRegistry:
    registry = RoleRegistry()
    with registry.registering_for("test"):
        registry.add("callback", "model_checkpoint", NamedCallback)
        registry.add("callback", "early_stopping", NamedCallback)
        registry.add("logger", "csv", NamedLogger)
    return registry


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_stack / build put the stack's directory on sys.path
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def project(tmp_path: Path) -> Any:
    """A project directory with a uniquely named module of test classes."""
    modname = f"stackmod_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{modname}.py").write_text(
        textwrap.dedent(
            """
            import ember

            class Net(ember.Module):
                def __init__(self, lr: float = 0.1, hidden: int = 8, name: str = "net"):
                    super().__init__()
                    self.lr, self.hidden, self.name = lr, hidden, name

            class Data(ember.DataModule):
                def __init__(self, batch_size: int = 32):
                    super().__init__()
                    self.batch_size = batch_size

            class Needs(ember.Module):
                def __init__(self, size: int):
                    super().__init__()
                    self.size = size

            class Anything(ember.Module):
                def __init__(self, **kwargs):
                    super().__init__()
                    self.kwargs = kwargs

            class MyCallback(ember.Callback):
                def __init__(self, every: int = 1):
                    self.every = every

            class NotAModel:
                def __init__(self, lr: float = 0.1):
                    self.lr = lr
            """
        )
    )

    class Project:
        root = tmp_path
        mod = modname

        def write(self, text: str, name: str = "ember.toml", where: Path | None = None) -> Path:
            path = (where or tmp_path) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).replace("MOD", modname))
            return path

        def load(
            self, overrides: list[str] = (), environ: dict[str, str] | None = None, config: Any = None, cwd: Path | None = None, **kw: Any
        ) -> Stack:
            kw.setdefault("trainer_cls", FakeTrainer)
            kw.setdefault("registry", make_registry())
            return load_stack(config, cwd or tmp_path, list(overrides), environ or {}, **kw)

        def error(self, *args: Any, **kw: Any) -> str:
            with pytest.raises(StackError) as info:
                self.load(*args, **kw)
            return str(info.value)

    return Project()


BASIC = """
seed_everything = 42
[model]
class_path = "MOD:Net"
init_args = { lr = 0.01 }
[data]
class_path = "MOD.Data"
init_args = { batch_size = 64 }
[trainer]
max_epochs = 10
[plugins]
autoload = false
enable = ["dummy"]
disable = ["early_stopping"]
[[callbacks]]
name = "model_checkpoint"
init_args = { monitor = "val_acc", mode = "max" }
[[callbacks]]
class_path = "MOD:MyCallback"
init_args = { every = 2 }
[[loggers]]
name = "csv"
"""


# --------------------------------------------------------------------------- literals and keys


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("true", True),
        ("false", False),
        ("[1, 2]", [1, 2]),
        ('"x y"', "x y"),
        ("{a = 1}", {"a": 1}),
        ("abc", "abc"),
        ("cpu", "cpu"),
        ("16-mixed", "16-mixed"),
        ("2024-01-01", "2024-01-01"),
        ("", ""),
    ],
)
def test_parse_literal(text: str, expected: Any) -> None:
    assert parse_literal(text) == expected
    assert type(parse_literal(text)) is type(expected)


def test_keys_round_trip() -> None:
    assert parse_key("callbacks[0].init_args.monitor") == ("callbacks", 0, "init_args", "monitor")
    assert parse_key("callbacks.0.init_args.monitor") == ("callbacks", 0, "init_args", "monitor")
    assert format_key(("callbacks", 0, "init_args", "monitor")) == "callbacks[0].init_args.monitor"


# --------------------------------------------------------------------------- discovery


def test_reads_ember_toml_in_cwd(project: Any) -> None:
    project.write(BASIC)
    stack = project.load()
    assert stack.source == project.root / "ember.toml"
    assert stack.seed_everything == 42
    assert stack.model.class_path.endswith(":Net") and stack.model.init_args == {"lr": 0.01}
    assert stack.data.init_args == {"batch_size": 64}
    assert stack.trainer == {"max_epochs": 10}
    assert stack.plugins.autoload is False and stack.plugins.enable == ["dummy"] and stack.plugins.disable == ["early_stopping"]
    assert [c.name for c in stack.callbacks] == ["model_checkpoint", None]
    assert stack.callbacks[1].class_path.endswith(":MyCallback")
    assert [c.name for c in stack.loggers] == ["csv"]
    assert stack.provenance["trainer.max_epochs"] == "ember.toml"
    assert stack.provenance["callbacks[0].init_args.monitor"] == "ember.toml"


def test_pyproject_tool_ember_found_in_parent(project: Any) -> None:
    project.write('[project]\nname = "x"\n[tool.ember]\nseed_everything = 3\n[tool.ember.trainer]\nmax_epochs = 2\n', "pyproject.toml")
    sub = project.root / "src" / "pkg"
    sub.mkdir(parents=True)
    stack = project.load(cwd=sub)
    assert stack.source == project.root / "pyproject.toml"
    assert stack.seed_everything == 3 and stack.trainer == {"max_epochs": 2}
    assert stack.import_root == project.root.resolve()


def test_pyproject_without_tool_ember_is_skipped(project: Any) -> None:
    project.write("[tool.ember]\nseed_everything = 1\n", "pyproject.toml")
    inner = project.root / "inner"
    project.write('[project]\nname = "inner"\n', "pyproject.toml", where=inner)
    assert project.load(cwd=inner).seed_everything == 1


def test_search_stops_at_git_root(project: Any) -> None:
    project.write("seed_everything = 1\n")
    repo = project.root / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "sub").mkdir()
    stack = project.load(cwd=repo / "sub")
    assert stack.source is None and stack.seed_everything is None
    assert stack.provenance["seed_everything"] == "default"


def test_ember_toml_wins_over_pyproject(project: Any) -> None:
    project.write("[tool.ember]\nseed_everything = 1\n", "pyproject.toml")
    project.write("seed_everything = 2\n")
    assert project.load().seed_everything == 2


def test_explicit_config(project: Any) -> None:
    project.write("seed_everything = 5\n", "configs/small.toml")
    project.write("seed_everything = 6\n")
    stack = project.load(config="configs/small.toml")
    assert stack.seed_everything == 5
    assert stack.provenance["seed_everything"] == str(Path("configs/small.toml"))
    project.write("[tool.ember]\nseed_everything = 7\n", "other/pyproject.toml")
    assert project.load(config=project.root / "other" / "pyproject.toml").seed_everything == 7


def test_explicit_config_errors(project: Any) -> None:
    message = project.error(config="nope.toml")
    assert "nope.toml" in message and "does not exist" in message
    project.write('[project]\nname = "x"\n', "pyproject.toml")
    message = project.error(config="pyproject.toml")
    assert "pyproject.toml" in message and "[tool.ember]" in message


def test_invalid_toml_names_file_and_position(project: Any) -> None:
    project.write("[trainer]\nmax_epochs = \n")
    message = project.error()
    assert message.startswith("ember.toml: not valid TOML") and "line 2" in message


# --------------------------------------------------------------------------- overrides and provenance


def test_precedence_default_file_env_cli(project: Any) -> None:
    project.write(BASIC)
    env = {"EMBER_TRAINER__MAX_EPOCHS": "7", "EMBER_TRAINER__ACCELERATOR": "cpu", "EMBER_SEED_EVERYTHING": "1"}
    stack = project.load(["--trainer.max_epochs", "3", "--model.init_args.lr=0.5"], env)
    assert stack.trainer == {"max_epochs": 3, "accelerator": "cpu"}
    assert stack.seed_everything == 1
    assert stack.model.init_args == {"lr": 0.5}
    assert stack.provenance["trainer.max_epochs"] == "command line"
    assert stack.provenance["trainer.accelerator"] == "environment (EMBER_TRAINER__ACCELERATOR)"
    assert stack.provenance["seed_everything"] == "environment (EMBER_SEED_EVERYTHING)"
    assert stack.provenance["model.init_args.lr"] == "command line"
    assert stack.provenance["data.init_args.batch_size"] == "ember.toml"
    rows = {k: (v, o) for k, v, o in stack.resolved(FakeTrainer)}
    assert rows["trainer.max_epochs"] == (3, "command line")
    assert rows["trainer.devices"] == ("auto", "default")
    assert "trainer.callbacks" not in rows and "trainer.plugins" not in rows
    assert rows["plugins.autoload"] == (False, "ember.toml")


def test_env_values_are_toml_literals(project: Any) -> None:
    project.write(BASIC)
    env = {
        "EMBER_TRAINER__LIMIT_TRAIN_BATCHES": "0.25",
        "EMBER_TRAINER__ENABLE_CHECKPOINTING": "false",
        "EMBER_TRAINER__DEVICES": "[0, 1]",
        "EMBER_TRAINER__DEFAULT_ROOT_DIR": "runs/a",
        "EMBER_MODEL__INIT_ARGS__NAME": "big",
        "EMBER_PLUGINS": "dummy",  # the plugin manager's variables are not stack overrides
        "EMBER_DISABLE_PLUGIN_AUTOLOAD": "1",
        "EMBER_GLOBAL_SEED": "3",
    }
    stack = project.load([], env)
    assert stack.trainer["limit_train_batches"] == 0.25
    assert stack.trainer["enable_checkpointing"] is False
    assert stack.trainer["devices"] == [0, 1]
    assert stack.trainer["default_root_dir"] == "runs/a"
    assert stack.model.init_args["name"] == "big"
    assert stack.seed_everything == 42


def test_env_plugin_lists_accept_commas(project: Any) -> None:
    project.write(BASIC)
    stack = project.load(["--plugins.disable", "a,b"], {"EMBER_PLUGINS__ENABLE": "x, y"})
    assert stack.plugins.enable == ["x", "y"] and stack.plugins.disable == ["a", "b"]


def test_cli_indexes_and_appends_callbacks(project: Any) -> None:
    project.write(BASIC)
    stack = project.load(
        ["--callbacks[0].init_args.monitor", "val_loss", "--callbacks.2.name", "early_stopping", "--callbacks.2.init_args.patience=9"]
    )
    assert stack.callbacks[0].init_args == {"monitor": "val_loss", "mode": "max"}
    assert stack.callbacks[2].name == "early_stopping" and stack.callbacks[2].init_args == {"patience": 9}
    assert stack.provenance["callbacks[0].init_args.monitor"] == "command line"
    assert stack.provenance["callbacks[0].init_args.mode"] == "ember.toml"
    assert stack.provenance["callbacks[2].name"] == "command line"


def test_cli_sets_sections_without_a_file(project: Any) -> None:
    stack = project.load(["--model.class_path", f"{project.mod}:Net", "--model.init_args", "{hidden = 4}", "--trainer", "{max_epochs = 1}"])
    assert stack.source is None
    assert stack.model.init_args == {"hidden": 4} and stack.trainer == {"max_epochs": 1}
    assert stack.provenance["model.init_args.hidden"] == "command line"


def test_table_override_merges(project: Any) -> None:
    project.write(BASIC)
    stack = project.load(["--trainer", "{accelerator = 'cpu'}"])
    assert stack.trainer == {"max_epochs": 10, "accelerator": "cpu"}


def test_to_dict(project: Any) -> None:
    project.write(BASIC)
    data = project.load().to_dict()
    assert data["model"] == {"class_path": f"{project.mod}:Net", "init_args": {"lr": 0.01}}
    assert data["callbacks"][0] == {"name": "model_checkpoint", "init_args": {"monitor": "val_acc", "mode": "max"}}
    assert data["plugins"] == {"autoload": False, "enable": ["dummy"], "disable": ["early_stopping"]}
    assert data["seed_everything"] == 42 and data["trainer"] == {"max_epochs": 10}


# --------------------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    "text, overrides, env, expected",
    [
        ("seed_everythin = 1\n", [], {}, ["ember.toml: seed_everythin: unknown key", "Did you mean 'seed_everything'?"]),
        ("[modle]\nclass_path = 'a:B'\n", [], {}, ["ember.toml: modle: unknown key", "Did you mean 'model'?"]),
        (
            "[model]\nclass_path = 'MOD:Net'\ninit_arg = {}\n",
            [],
            {},
            ["ember.toml: model.init_arg: unknown key", "Did you mean 'model.init_args'?"],
        ),
        ("[model]\ninit_args = {}\n", [], {}, ["ember.toml: model: missing class_path"]),
        ("[model]\nclass_path = 'Net'\n", [], {}, ["ember.toml: model.class_path: expected 'module.path:ClassName'"]),
        ("[model]\nclass_path = 3\n", [], {}, ["ember.toml: model.class_path: expected a non-empty string, got an integer (3)"]),
        ("model = 'MOD:Net'\n", [], {}, ["ember.toml: model: expected a table", "got a string"]),
        (
            "[model]\nclass_path = 'MOD:Net'\ninit_args = [1]\n",
            [],
            {},
            ["ember.toml: model.init_args: expected a table of keyword arguments"],
        ),
        ("seed_everything = 'x'\n", [], {}, ['ember.toml: seed_everything: expected an integer seed, got a string ("x")']),
        ("seed_everything = true\n", [], {}, ["expected an integer seed, got a boolean"]),
        ("trainer = 3\n", [], {}, ["ember.toml: trainer: expected a table of ember.Trainer arguments"]),
        (
            "[trainer]\nmax_epoch = 3\n",
            [],
            {},
            ["ember.toml: trainer.max_epoch: not an ember.Trainer argument", "Did you mean 'trainer.max_epochs'?", "accelerator"],
        ),
        ("[trainer]\nmax_epochs = 'ten'\n", [], {}, ['ember.toml: trainer.max_epochs: expected int | None, got a string ("ten")']),
        ("[trainer]\nmax_epochs = true\n", [], {}, ["trainer.max_epochs: expected int | None, got a boolean (true)"]),
        ("[trainer]\ndevices = [0, 'a']\n", [], {}, ["trainer.devices: expected int | str | list[int]"]),
        ("[trainer]\ncallbacks = []\n", [], {}, ["ember.toml: trainer.callbacks: set this with [[callbacks]] tables"]),
        ("[trainer]\nplugins = []\n", [], {}, ["trainer.plugins: set this with plugins.enable"]),
        ("[trainer]\nlogger = 'csv'\n", [], {}, ["trainer.logger: expected true or false here (configure loggers with [[loggers]])"]),
        (
            "[trainer]\nlogger = false\n[[loggers]]\nname = 'csv'\n",
            [],
            {},
            ["ember.toml: trainer.logger: is false, but [[loggers]] are configured"],
        ),
        ("[plugins]\nautoload = 'no'\n", [], {}, ["ember.toml: plugins.autoload: expected true or false"]),
        ("[plugins]\nenable = 'dummy'\n", [], {}, ["ember.toml: plugins.enable: expected an array of strings"]),
        ("[plugins]\nenabled = []\n", [], {}, ["ember.toml: plugins.enabled: unknown key", "Did you mean 'plugins.enable'?"]),
        ("[callbacks]\nname = 'x'\n", [], {}, ["ember.toml: callbacks: expected an array of tables ([[callbacks]]", "write [[callbacks]]"]),
        ("[[callbacks]]\ninit_args = {}\n", [], {}, ["ember.toml: callbacks[0]: needs a name (a registered callback) or a class_path"]),
        ("[[callbacks]]\nname = 'a'\nclass_path = 'a:B'\n", [], {}, ["callbacks[0]: has both name and class_path"]),
        ("[[callbacks]]\nnmae = 'a'\n", [], {}, ["callbacks[0].nmae: unknown key", "Did you mean 'callbacks[0].name'?"]),
        (
            "[[callbacks]]\nname = 'model_checkpoint'\n[[callbacks]]\nname = 'early_stoping'\n",
            [],
            {},
            [
                "ember.toml: callbacks[1].name: no callback named 'early_stoping' is registered",
                "Did you mean 'early_stopping'?",
                "Registered callbacks: early_stopping, model_checkpoint",
                "ember plugins",
            ],
        ),
        ("[[loggers]]\nname = 'cvs'\n", [], {}, ["ember.toml: loggers[0].name: no logger named 'cvs'", "Did you mean 'csv'?"]),
        (
            "[[callbacks]]\nname = 'early_stopping'\ninit_args = { patiense = 3 }\n",
            [],
            {},
            [
                "ember.toml: callbacks[0].init_args.patiense: callback 'early_stopping' takes no argument 'patiense'",
                "Did you mean 'callbacks[0].init_args.patience'?",
            ],
        ),
        (
            "[[callbacks]]\nname = 'early_stopping'\ninit_args = { patience = 'x' }\n",
            [],
            {},
            ["callbacks[0].init_args.patience: callback 'early_stopping' expects int for 'patience', got a string"],
        ),
        (
            "[model]\nclass_path = 'MOD:Net'\ninit_args = { lrr = 0.1 }\n",
            [],
            {},
            [
                "ember.toml: model.init_args.lrr: MOD:Net takes no argument 'lrr'",
                "Did you mean 'model.init_args.lr'?",
                "It accepts: lr, hidden, name",
            ],
        ),
        (
            "[model]\nclass_path = 'MOD:Net'\ninit_args = { lr = 'fast' }\n",
            [],
            {},
            ["model.init_args.lr: MOD:Net expects float for 'lr', got a string (\"fast\")"],
        ),
        ("[model]\nclass_path = 'MOD:Needs'\n", [], {}, ["ember.toml: model.init_args: MOD:Needs requires 'size'"]),
        (
            "[model]\nclass_path = 'MOD:Nett'\n",
            [],
            {},
            ["ember.toml: model.class_path = 'MOD:Nett': cannot import 'MOD:Nett'", "has no attribute 'Nett'", "Did you mean MOD:Net?"],
        ),
        (
            "[model]\nclass_path = 'no_such_module_xyz:Net'\n",
            [],
            {},
            ["ember.toml: model.class_path = 'no_such_module_xyz:Net': cannot import", "no module named 'no_such_module_xyz'"],
        ),
        ("[data]\nclass_path = 'MOD:Dat'\n", [], {}, ["ember.toml: data.class_path = 'MOD:Dat'", "Did you mean MOD:Data?"]),
        (
            "[[callbacks]]\nclass_path = 'MOD:MyCallbak'\n",
            [],
            {},
            ["ember.toml: callbacks[0].class_path = 'MOD:MyCallbak'", "Did you mean MOD:MyCallback?"],
        ),
        # origins other than the file
        (
            "",
            ["--trainer.max_epoch", "3"],
            {},
            ["command line: trainer.max_epoch: not an ember.Trainer argument", "Did you mean 'trainer.max_epochs'?"],
        ),
        (
            "",
            [],
            {"EMBER_TRAINER__MAX_EPOCH": "3"},
            ["environment (EMBER_TRAINER__MAX_EPOCH): trainer.max_epoch: not an ember.Trainer argument"],
        ),
        (
            "",
            [],
            {"EMBER_TRAINR__MAX_EPOCHS": "3"},
            ["environment (EMBER_TRAINR__MAX_EPOCHS): trainr.max_epochs: unknown section 'trainr'", "Did you mean 'trainer'?"],
        ),
        (
            "",
            ["--trainer.max_epochs", "x"],
            {"EMBER_TRAINER__MAX_EPOCHS": "2"},
            ["command line: trainer.max_epochs: expected int | None, got a string"],
        ),
        ("", ["--seed_everything", "x"], {}, ["command line: seed_everything: expected an integer seed"]),
        (
            "",
            ["--model.class_path", "MOD:Net", "--model.init_args.hiden=3"],
            {},
            ["command line: model.init_args.hiden: MOD:Net takes no argument 'hiden'", "Did you mean 'model.init_args.hidden'?"],
        ),
        ("", ["--trainer.max_epochs"], {}, ["command line (--trainer.max_epochs): needs a value"]),
        ("", ["trainer.max_epochs=3"], {}, ["command line: unexpected argument 'trainer.max_epochs=3'"]),
        ("", ["--callbacks.3.name", "x"], {}, ["command line: callbacks[3].name: there are 0 callbacks entries"]),
        (
            "[trainer]\nmax_epochs = 3\n",
            ["--trainer.max_epochs.x", "1"],
            {},
            ["command line: trainer.max_epochs.x: trainer.max_epochs is an integer (3), not a table, so it has no key 'x'"],
        ),
        ("", ["--model.init_args.0", "1"], {}, ["an index (0) is only valid right after callbacks or loggers"]),
        ("", [], {"EMBER_TRAINER____X": "1"}, ["environment (EMBER_TRAINER____X): empty key segment"]),
    ],
)
def test_error_messages(project: Any, text: str, overrides: list[str], env: dict[str, str], expected: list[str]) -> None:
    if text:
        project.write(text)
    message = project.error([o.replace("MOD", project.mod) for o in overrides], env)
    for part in expected:
        assert part.replace("MOD", project.mod) in message, message


def test_pyproject_errors_use_tool_ember_keys(project: Any) -> None:
    project.write("[tool.ember.trainer]\nmax_epoch = 3\n", "pyproject.toml")
    message = project.error()
    assert message.startswith("pyproject.toml: tool.ember.trainer.max_epoch: not an ember.Trainer argument"), message
    assert "Did you mean 'trainer.max_epochs'?" in message
    project.write("[tool]\nember = 3\n", "pyproject.toml")
    assert "pyproject.toml: tool.ember: expected a table" in project.error()


def test_require_model(project: Any) -> None:
    project.write("[trainer]\nmax_epochs = 1\n")
    message = project.error(require_model=True)
    assert message.startswith("ember.toml: model: no [model] configured") and "--model.class_path" in message
    empty = project.root / "empty"
    (empty / ".git").mkdir(parents=True)
    message = project.error(require_model=True, cwd=empty)
    assert "no stack file" in message and "no [model] configured" in message


def test_kwargs_classes_accept_anything(project: Any) -> None:
    project.write("[model]\nclass_path = 'MOD:Anything'\ninit_args = { whatever = 1, other = 'x' }\n")
    module, _, _ = build(project.load(), make_registry())
    assert module.kwargs == {"whatever": 1, "other": "x"}


def test_check_false_skips_imports(project: Any) -> None:
    project.write("[model]\nclass_path = 'not_a_module_zz:Net'\n[trainer]\nwhatever = 1\n[[callbacks]]\nname = 'nope'\n")
    stack = project.load(check=False)
    assert stack.trainer == {"whatever": 1}


def test_import_class_path_forms(project: Any) -> None:
    sys.path.insert(0, str(project.root))
    assert import_class_path(f"{project.mod}:Net").__name__ == "Net"
    assert import_class_path(f"{project.mod}.Net").__name__ == "Net"
    assert import_class_path("collections:OrderedDict.fromkeys")
    with pytest.raises(StackError, match="expected 'module.path:ClassName'"):
        import_class_path("Net", "somewhere")


def test_import_error_inside_user_module(project: Any) -> None:
    (project.root / f"{project.mod}_bad.py").write_text("import not_installed_dep_qq\nclass Net: pass\n")
    project.write(f"[model]\nclass_path = '{project.mod}_bad:Net'\n")
    message = project.error()
    assert f"ember.toml: model.class_path = '{project.mod}_bad:Net': cannot import" in message
    assert "not_installed_dep_qq" in message
    (project.root / f"{project.mod}_raises.py").write_text("raise RuntimeError('boom at import')\n")
    project.write(f"[model]\nclass_path = '{project.mod}_raises:Net'\n")
    message = project.error()
    assert "RuntimeError: boom at import" in message and f"{project.mod}_raises.py:1" in message


# --------------------------------------------------------------------------- build


def test_build(project: Any) -> None:
    project.write(BASIC)
    stack = project.load(["--trainer.accelerator", "cpu"])
    module, datamodule, kwargs = build(stack, make_registry())
    assert type(module).__name__ == "Net" and module.lr == 0.01
    assert type(datamodule).__name__ == "Data" and datamodule.batch_size == 64
    assert kwargs["max_epochs"] == 10 and kwargs["accelerator"] == "cpu"
    first, second = kwargs["callbacks"]
    assert isinstance(first, NamedCallback) and (first.monitor, first.mode) == ("val_acc", "max")
    assert type(second).__name__ == "MyCallback" and second.every == 2
    assert [type(lg) for lg in kwargs["logger"]] == [NamedLogger]
    assert kwargs["autoload_plugins"] is False
    assert kwargs["plugins"] == ["dummy"] and kwargs["disable_plugins"] == ["early_stopping"]


def test_build_minimal_passes_no_plugin_kwargs(project: Any) -> None:
    project.write("[model]\nclass_path = 'MOD:Net'\n")
    module, datamodule, kwargs = build(project.load(), None)
    assert datamodule is None and kwargs == {}


def test_build_puts_stack_dir_on_sys_path(project: Any) -> None:
    project.write("[model]\nclass_path = 'MOD:Net'\n")
    stack = project.load(check=False)
    sys.path[:] = [p for p in sys.path if p != str(project.root.resolve())]
    sys.modules.pop(project.mod, None)
    module, _, _ = build(stack)
    assert type(module).__name__ == "Net"


def test_build_reports_bad_init_args_with_key(project: Any) -> None:
    project.write("[model]\nclass_path = 'MOD:Needs'\ninit_args = { size = 1 }\n")
    stack = project.load(check=False)
    stack.model.init_args = {"sise": 1}
    with pytest.raises(
        StackError,
        match=r"ember.toml: model.init_args.sise: MOD:Needs rejected it: .*unexpected keyword argument 'sise'".replace("MOD", project.mod),
    ):
        build(stack)


def test_find_stack_file_none(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    assert find_stack_file(None, tmp_path) == (None, None)


# --------------------------------------------------------------------------- with the real Trainer and registry

needs_trainer = pytest.mark.skipif(importlib.util.find_spec("ember.trainer") is None, reason="ember.trainer is not written yet")


@needs_trainer
def test_real_trainer_signature(project: Any) -> None:
    project.write("[trainer]\nmax_epochs = 2\nmax_epoch = 3\n")
    message = project.error(trainer_cls=None)
    assert "ember.toml: trainer.max_epoch: not an ember.Trainer argument" in message and "Did you mean 'trainer.max_epochs'?" in message
    project.write("[trainer]\nmax_epochs = 'x'\n")
    assert "trainer.max_epochs: expected" in project.error(trainer_cls=None)
    project.write("[trainer]\nmax_epochs = 2\naccelerator = 'cpu'\nlimit_train_batches = 0.5\n")
    assert project.load(trainer_cls=None).trainer["max_epochs"] == 2


def test_real_registry_names(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EMBER_DISABLE_PLUGIN_AUTOLOAD", "EMBER_PLUGINS", "EMBER_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    project.write(
        "[[callbacks]]\nname = 'model_checkpoint'\ninit_args = { monitor = 'val_acc', mode = 'max' }\n[[loggers]]\nname = 'csv'\n"
    )
    stack = project.load(registry=None)
    assert [c.name for c in stack.callbacks] == ["model_checkpoint"]
    project.write("[[callbacks]]\nname = 'model_chekpoint'\n")
    message = project.error(registry=None)
    assert "callbacks[0].name: no callback named 'model_chekpoint'" in message and "Did you mean 'model_checkpoint'?" in message
    # a disabled built-in is not a registered name
    project.write("[plugins]\ndisable = ['model_checkpoint']\n[[callbacks]]\nname = 'model_checkpoint'\n")
    message = project.error(registry=None)
    assert "no callback named 'model_checkpoint' is registered" in message
