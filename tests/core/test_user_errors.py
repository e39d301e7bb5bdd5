"""Issue 11 (the CLI, stack and plugin parts) and issue 12 items 3-5: every
user mistake is one short message on stderr naming the culprit and the fix,
exit status 2, no traceback unless ``--traceback`` / ``EMBER_TRACEBACK=1``,
and the project's files unchanged.

The ``ember`` command runs in this process (``ember.cli.main``) so the fast
tier can afford it; the tests that install plugin distributions or spawn a
process are marked slow."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from ember import cli

TINY = """
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember


class Tiny(ember.Module):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    test_step = validation_step

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TinyData(ember.DataModule):
    def __init__(self, n: int = 16):
        super().__init__()
        x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
        self.ds = TensorDataset(x, x.sum(1, keepdim=True))

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=8)

    val_dataloader = test_dataloader = predict_dataloader = train_dataloader


class NotAModule:
    def __init__(self, lr: float = 0.1):
        self.lr = lr
"""

STACK = """
[model]
class_path = "MOD:Tiny"
[data]
class_path = "MOD:TinyData"
[trainer]
max_epochs = 1
enable_progress_bar = false
enable_model_summary = false
enable_checkpointing = false
logger = false
"""


class Project:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.monkeypatch, self.capsys = root, monkeypatch, capsys
        self.mod = f"usererr_{uuid.uuid4().hex[:8]}"
        (root / ".git").mkdir()
        (root / f"{self.mod}.py").write_text(TINY)
        self.write(STACK)

    def write(self, stack: str) -> None:
        (self.root / "ember.toml").write_text(textwrap.dedent(stack).replace("MOD", self.mod))

    def snapshot(self) -> dict[str, str]:
        return {
            str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }

    def ember(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        self.monkeypatch.chdir(self.root)
        for name in [k for k in os.environ if k.startswith("EMBER_")]:
            self.monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            self.monkeypatch.setenv(name, value)
        self.capsys.readouterr()
        rc = cli.main(list(args))
        out, err = self.capsys.readouterr()
        return rc, out, err

    def user_error(self, *args: str, parts: tuple[str, ...] = (), env: dict[str, str] | None = None) -> str:
        """Run ``ember *args``: exit 2, one short message naming ``parts``, no
        traceback, no file of the project changed. Returns stderr."""
        before = self.snapshot()
        rc, out, err = self.ember(*(a.replace("MOD", self.mod) for a in args), env=env)
        assert rc == 2, (rc, out, err)
        assert err.startswith("error: "), err
        assert "Traceback" not in err, err
        assert len(err.strip().splitlines()) < 10, err
        for part in parts:
            assert part.replace("MOD", self.mod) in err, (part, err)
        assert self.snapshot() == before, "a failed command changed the project's files"
        return err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Project:
    monkeypatch.setattr(sys, "path", list(sys.path))
    return Project(tmp_path, monkeypatch, capsys)


# --------------------------------------------------------------------------- --ckpt_path


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_ckpt_path_missing(project: Project, command: str) -> None:
    (project.root / "ckpts").mkdir()
    (project.root / "ckpts" / "epoch=0.ckpt").write_bytes(b"PK\x03\x04")
    project.user_error(
        command,
        "--ckpt_path",
        "ckpts/epoch=1.ckpt",
        parts=("--ckpt_path ckpts/epoch=1.ckpt: no such file", "Did you mean 'ckpts/epoch=0.ckpt'?"),
    )


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_ckpt_path_directory(project: Project, command: str) -> None:
    (project.root / "ckpts").mkdir()
    (project.root / "ckpts" / "last.ckpt").write_bytes(b"PK\x03\x04")
    project.user_error(
        command, "--ckpt_path", "ckpts", parts=("--ckpt_path ckpts: is a directory, not a checkpoint", "last.ckpt: pass one of those")
    )


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_ckpt_path_not_a_checkpoint(project: Project, command: str) -> None:
    (project.root / "notes.txt").write_text("hello")
    project.user_error(
        command, "--ckpt_path", "notes.txt", parts=("--ckpt_path notes.txt: is not a checkpoint", "written by ModelCheckpoint")
    )


def test_traceback_on_request(project: Project) -> None:
    for args, env in (
        (("--traceback", "fit", "--ckpt_path", "nope.ckpt"), {}),
        (("fit", "--ckpt_path", "nope.ckpt"), {"EMBER_TRACEBACK": "1"}),
    ):
        rc, _, err = project.ember(*args, env=env)
        assert (
            rc == 2
            and "Traceback (most recent call last)" in err
            and err.rstrip().splitlines()[-1].startswith("error: --ckpt_path nope.ckpt")
        ), err


# --------------------------------------------------------------------------- errors ember raises while building or running the stack


def test_builtin_callback_rejects_a_value_names_file_and_key(project: Project) -> None:
    project.write(STACK + '\n[[callbacks]]\nname = "early_stopping"\ninit_args = { monitor = "val_loss", patience = -3 }\n')
    project.user_error(
        "fit", parts=("ember.toml: callbacks[0].init_args.patience", "EarlyStopping(patience=-3) must be a non-negative int")
    )


def test_builtin_callback_by_class_path_rejects_a_value(project: Project) -> None:
    project.write(
        STACK
        + '\n[[callbacks]]\nclass_path = "ember.plugins.callbacks.early_stopping:EarlyStopping"\ninit_args = { monitor = "val_loss", mode = "maxx" }\n'
    )
    project.user_error("fit", parts=("ember.toml: callbacks[0].init_args.mode", "Did you mean 'max'?"))


def test_trainer_value_rejected_names_the_key(project: Project) -> None:
    project.write(STACK.replace("max_epochs = 1", "max_epochs = 1\nlimit_train_batches = -1"))
    project.user_error("fit", parts=("ember.toml: trainer.limit_train_batches", "limit_train_batches"))


def test_runtime_error_from_ember_is_short(project: Project) -> None:
    project.write(STACK + '\n[[callbacks]]\nname = "model_checkpoint"\ninit_args = { monitor = "nope", dirpath = "ck" }\n')
    err = project.user_error("fit", parts=("`ember fit` (ember.toml) stopped", "ModelCheckpoint(monitor='nope')", "self.log('nope'"))
    assert not (project.root / "ck").exists() or not any((project.root / "ck").iterdir()), err


def test_error_in_user_code_keeps_its_traceback(project: Project) -> None:
    (project.root / f"{project.mod}.py").write_text(TINY.replace("self.lr = lr", "self.lr = lr\n        raise RuntimeError('my bug')"))
    rc, _, err = project.ember("fit")
    assert rc == 1 and "Traceback" in err and "my bug" in err


# --------------------------------------------------------------------------- flags and help


def test_unknown_flag_suggests_the_closest_flag(project: Project) -> None:
    err = project.user_error("fit", "--ckpt_pth", "x.ckpt", parts=("unrecognized option '--ckpt_pth'", "Did you mean --ckpt_path x.ckpt?"))
    assert "usage: ember fit " in err and "usage: ember [" not in err


def test_unknown_flag_suggests_the_stack_key(project: Project) -> None:
    err = project.user_error(
        "validate", "--max_epochs", "3", parts=("unrecognized option '--max_epochs'", "Did you mean --trainer.max_epochs 3?")
    )
    assert "usage: ember validate " in err


def test_fit_help_lists_overridable_keys(project: Project) -> None:
    rc, out, _ = project.ember("fit", "--help")
    assert rc == 0
    import inspect

    from ember import Trainer

    params = [
        n
        for n in inspect.signature(Trainer.__init__).parameters
        if n not in ("self", "callbacks", "plugins", "disable_plugins", "autoload_plugins")
    ]
    for name in params:
        assert f"--trainer.{name} " in out, name
    for key in ("--model.class_path", "--data.init_args", "--callbacks.N.name", "--plugins.enable", "--seed_everything", "EMBER_TRACEBACK"):
        assert key in out, key


# --------------------------------------------------------------------------- class_path (issue 12, item 3)


@pytest.mark.parametrize(
    "args",
    [
        ["--model.class_path", "os:system", "--model.init_args.command", "touch MARKER"],
        ["--data.class_path", "os:system", "--data.init_args.command", "touch MARKER"],
        ["--model.class_path", "subprocess:Popen", "--model.init_args.args", '["touch", "MARKER"]'],
        ["--callbacks.0.class_path", "os:system", "--callbacks.0.init_args.command", "touch MARKER"],
        ["--trainer.logger", "true", "--loggers.0.class_path", "subprocess:Popen", "--loggers.0.init_args.args", '["touch", "MARKER"]'],
    ],
)
def test_class_path_must_name_a_class_of_the_right_kind(project: Project, args: list[str]) -> None:
    marker = project.root.parent / f"marker-{uuid.uuid4().hex[:6]}"
    args = [a.replace("MARKER", str(marker)) for a in args]
    err = project.user_error("fit", *args, parts=("class_path", "ember did not call it", "Name a subclass of ember."))
    assert not marker.exists(), err


def test_class_path_names_a_plain_class(project: Project) -> None:
    project.user_error("fit", "--model.class_path", "MOD:NotAModule", parts=("MOD.NotAModule, which is not a subclass of ember.Module",))


def test_misspelt_module_suggests_the_module_next_to_the_stack(project: Project) -> None:
    typo = project.mod[:-1] + ("x" if project.mod[-1] != "x" else "y")
    project.user_error(
        "fit", "--model.class_path", f"{typo}:Tiny", parts=(f"no module named '{typo}'", "Did you mean 'MOD' (next to the stack file")
    )


# --------------------------------------------------------------------------- stack discovery (issue 12, item 5)


def test_discovery_stops_at_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.stack import find_stack_file

    (tmp_path / "ember.toml").write_text("[trainer]\nmax_epochs = 1\n")
    home = tmp_path / "home"
    (home / "proj").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert find_stack_file(None, home / "proj") == (None, None)
    (home / "ember.toml").write_text("[trainer]\nmax_epochs = 2\n")
    assert find_stack_file(None, home / "proj")[0] == home / "ember.toml"


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="making a directory owned by another user needs root")
def test_discovery_stops_below_a_directory_owned_by_someone_else(project: Project) -> None:
    shared = project.root / "shared"
    mine = shared / "mine"
    mine.mkdir(parents=True)
    (shared / "ember.toml").write_text('[model]\nclass_path = "os:system"\n')
    os.chown(shared, 65534, 65534)
    project.root.joinpath(".git").rmdir()
    from ember.stack import find_stack_file

    assert find_stack_file(None, mine) == (None, None)
    project.root = mine
    rc, out, err = project.ember("config")
    assert rc == 0 and "no stack file found" in out and "owned by another user" in out, (out, err)


def test_config_says_which_file(project: Project) -> None:
    (project.root / "sub").mkdir()
    project.root = project.root / "sub"
    rc, out, _ = project.ember("config")
    assert rc == 0 and f"# stack: {project.root.parent.resolve() / 'ember.toml'}\n# found from {project.root}" in out, out


# --------------------------------------------------------------------------- plugins: names, collisions, arguments

EXTRA_DISTS = ("ember-dummy-plugin", "ember-impostor-plugin", "ember-badargs-plugin")


@pytest.fixture(scope="module")
def extra_dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extra_dists")
    source = Path(__file__).parents[1] / "dists"
    shutil.copytree(source, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    cmd += ["--quiet", "--target", str(root / "site"), *(str(root / "src" / n) for n in EXTRA_DISTS)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=240)
    return root / "site"


@pytest.fixture
def with_extra(extra_dists: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.syspath_prepend(str(extra_dists))
    for var in ("EMBER_DISABLE_PLUGIN_AUTOLOAD", "EMBER_PLUGINS", "EMBER_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    marker = tmp_path / "marker.txt"
    monkeypatch.setenv("EMBER_DUMMY_MARKER", str(marker))
    return marker


def _pm(**env: str) -> Any:
    from ember.plugin_manager import AutoloadSettings, default_plugin_manager

    return default_plugin_manager(AutoloadSettings.from_env(env))


@pytest.mark.slow
def test_entry_point_collision_names_both_and_loads_neither(with_extra: Path) -> None:
    pm = _pm()
    assert not pm.has_plugin("dummy")
    failures = [f for f in pm.failures if f.name == "dummy"]
    assert len(failures) == 1
    text = failures[0].describe()
    assert "ember-dummy-plugin 0.3.1" in text and "ember-impostor-plugin 6.6.6" in text and "loaded none of them" in text
    assert "EMBER_PLUGINS=ember-dummy-plugin:dummy" in text
    assert not with_extra.exists() or "impostor.imported" not in with_extra.read_text()
    pm = _pm(EMBER_PLUGINS="dummy")  # a bare name must not pick one
    assert not pm.has_plugin("dummy") and any(f.name == "dummy" for f in pm.failures)


@pytest.mark.slow
@pytest.mark.parametrize("allow", ["ember-dummy-plugin:dummy", "ember_dummy_plugin:dummy"])
def test_allow_list_picks_a_distribution(with_extra: Path, allow: str) -> None:
    pm = _pm(EMBER_PLUGINS=allow)
    assert pm.has_plugin("dummy") and pm.sources["dummy"].distribution == "ember-dummy-plugin"
    assert not [f for f in pm.failures if f.name == "dummy"]
    assert not with_extra.exists() or "impostor.imported" not in with_extra.read_text()


@pytest.mark.slow
def test_deny_list_by_distribution_resolves_a_collision(with_extra: Path) -> None:
    pm = _pm(EMBER_DISABLE_PLUGINS="ember-impostor-plugin")
    assert pm.has_plugin("dummy") and pm.sources["dummy"].distribution == "ember-dummy-plugin"


@pytest.mark.slow
def test_hookimpl_with_wrong_argument_names(with_extra: Path) -> None:
    pm = _pm(EMBER_PLUGINS="badargs")
    (failure,) = [f for f in pm.failures if f.name == "badargs"]
    for part in (
        "Plugin 'badargs' from distribution ember-badargs-plugin 0.2.0",
        "on_fit_start",
        "'modul' (did you mean 'module'?)",
        "(trainer, module)",
    ):
        assert part in failure.error, failure.error
    assert "hookimpl definition" not in failure.error  # not pluggy's raw text


@pytest.mark.slow
def test_unknown_plugin_name_warns_with_the_closest(with_extra: Path) -> None:
    from ember.plugin_names import UnknownPluginNameWarning

    with pytest.warns(UnknownPluginNameWarning, match=r"EMBER_PLUGINS: 'badarg' matches no installed plugin.*Did you mean 'badargs'\?"):
        _pm(EMBER_PLUGINS="badarg")
    with pytest.warns(UnknownPluginNameWarning, match=r"EMBER_DISABLE_PLUGINS: 'csv_loger'.*Did you mean 'csv_logger'\?"):
        _pm(EMBER_DISABLE_PLUGINS="csv_loger")


@pytest.mark.slow
def test_unknown_plugin_name_in_the_stack(project: Project, with_extra: Path) -> None:
    project.write(STACK + '\n[plugins]\nenable = ["ember-dummy-plugn"]\n')
    with pytest.warns(
        UserWarning,
        match=r"ember.toml: plugins.enable: 'ember-dummy-plugn' matches no installed plugin.*Did you mean 'ember-dummy-plugin'\?",
    ):
        rc, _, err = project.ember("fit")
    assert rc == 0, err
    project.write('required_plugins = ["torch"]\n' + STACK + '\n[plugins]\nenable = ["ember-dummy-plugn"]\n')
    project.user_error(
        "fit", parts=("ember.toml: plugins.enable: 'ember-dummy-plugn'", "Did you mean 'ember-dummy-plugin'?", "required_plugins")
    )


# --------------------------------------------------------------------------- a real process


@pytest.mark.slow
def test_console_script_user_error_in_a_real_process(project: Project) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "ember.cli", "test", "--ckpt_path", "missing.ckpt"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        proc.returncode == 2 and proc.stderr.startswith("error: --ckpt_path missing.ckpt: no such file") and "Traceback" not in proc.stderr
    )


# --------------------------------------------------------------------------- a folder named ember


@pytest.mark.parametrize("with_init", [False, True])
def test_shadowing_folder_is_named(project: Project, with_init: bool) -> None:
    (project.root / "ember").mkdir()
    if with_init:
        (project.root / "ember" / "__init__.py").write_text("")
    rc, out, err = project.ember("config")
    assert rc == 0, err
    assert f"warning: the folder {project.root / 'ember'} hides the installed ember package" in err
    assert "Rename the folder" in err and "Traceback" not in err


def test_no_shadowing_warning_without_the_folder(project: Project) -> None:
    rc, _, err = project.ember("config")
    assert rc == 0 and "hides the installed ember" not in err


@pytest.mark.slow
def test_shadowing_folder_through_the_console_script(project: Project) -> None:
    script = Path(sys.executable).parent / "ember"
    if not script.exists():
        pytest.skip("the ember console script is not installed here")
    (project.root / "ember").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    proc = subprocess.run([str(script), "config"], cwd=project.root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "hides the installed ember package" in proc.stderr, proc.stderr
    # what a script in that directory sees, which the warning explains
    probe = subprocess.run(
        [sys.executable, "-c", "import ember; ember.Trainer"], cwd=project.root, env=env, capture_output=True, text=True, timeout=120
    )
    if probe.returncode == 0:
        pytest.skip("this installation of ember is not shadowed by a folder (a regular, non-editable install)")
    assert "has no attribute 'Trainer'" in probe.stderr


@pytest.mark.slow
def test_export_refuses_a_data_class_path_that_is_not_a_datamodule(project: Project) -> None:
    rc, _, err = project.ember("fit", "--trainer.enable_checkpointing", "true", "--trainer.default_root_dir", "out")
    assert rc == 0, err
    (ckpt,) = sorted((project.root / "out").rglob("*.ckpt"))[-1:]
    marker = project.root.parent / f"marker-{uuid.uuid4().hex[:6]}"
    err = project.user_error(
        "export",
        str(ckpt),
        "--data.class_path",
        "os:system",
        "--data.init_args.command",
        f"touch {marker}",
        parts=("data.class_path = 'os:system': names a function", "ember did not call it"),
    )
    assert not marker.exists(), err


def test_hookimpl_argument_mismatch_for_a_plugin_object() -> None:
    import ember
    from ember.plugin_manager import PluginManager, PluginValidationError

    class Plugin:
        @ember.hookimpl
        def on_train_epoch_end(self, trainer, modle):  # the hook's arguments are (trainer, module)
            raise AssertionError("never called")

    pm = PluginManager()
    with pytest.raises(PluginValidationError) as info:
        pm.register(Plugin(), "mine")
    text = str(info.value)
    assert "Plugin 'mine'" in text and "on_train_epoch_end" in text and "'modle' (did you mean 'module'?)" in text, text
    assert "(trainer, module)" in text and "hookimpl definition" not in text
    assert not pm.has_plugin("mine")
