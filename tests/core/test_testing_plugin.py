"""``ember.testing``: the pytest plugin for plugin authors.

Checked three ways: importing it is cheap (a subprocess sees no torch), a
project's tests use its fixtures with nothing but ember installed (pytester),
and this file uses the fixtures itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import ember
import ember.testing
from ember.testing import HookRecorder, TinyModule, assert_survives_resume

# tests/core/conftest.py has a make_trainer fixture of its own; ember.testing's,
# bound in this module, takes precedence here.
make_trainer = ember.testing.make_trainer

pytest_plugins = ["pytester"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("EMBER_", "PYTEST_"))}


# --------------------------------------------------------------------------- cheap, side-effect-free import


def test_import_is_cheap_and_imports_no_torch() -> None:
    code = (
        "import json, sys\n"
        "import pytest\n"  # what pytest itself imports does not count
        "before = set(sys.modules)\n"
        "import ember.testing\n"
        "new = sorted(m for m in set(sys.modules) - before if m.startswith(('torch', 'ember', 'numpy', 'pluggy')))\n"
        "print(json.dumps(new))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["ember", "ember._version", "ember.testing"]


def test_pytest_loads_it_everywhere_but_it_does_nothing_unasked(tmp_path: Path) -> None:
    # A project that never mentions ember: the entry point loads the plugin,
    # and it neither imports torch nor adds anything but fixtures.
    (tmp_path / "test_other.py").write_text(
        textwrap.dedent(
            """
            import sys

            def test_unrelated(request):
                assert request.config.pluginmanager.has_plugin("ember")
                assert "torch" not in sys.modules
                assert "ember.trainer" not in sys.modules
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_other.py"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fixtures = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", "test_other.py"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for name in ("tiny_module", "tiny_datamodule", "make_trainer", "hook_recorder"):
        assert name in fixtures


def test_names_load_lazily() -> None:
    import ember.testing as testing

    assert testing.TinyModule is TinyModule and testing.HookRecorder is HookRecorder
    assert "TinyModule" in testing.__all__
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        testing.nope  # noqa: B018


# --------------------------------------------------------------------------- a plugin project's tests, through pytester

PROJECT_TESTS = '''
import math

import pytest

import ember
from ember.testing import assert_survives_resume


class Counter(ember.Callback):
    def __init__(self):
        self.batches = 0
        self.best = math.inf

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches += 1

    def on_train_epoch_end(self, trainer, module):
        self.best = min(self.best, float(trainer.callback_metrics["train_loss"]))

    def state_dict(self):
        return {"batches": self.batches, "best": self.best}

    def load_state_dict(self, state):
        self.batches = state["batches"]
        self.best = state["best"]


class Forgetful(Counter):
    def load_state_dict(self, state):
        self.batches = state["batches"]  # forgets best


class StatefulPlugin:
    """A plain plugin object whose state travels in the checkpoint's own key."""

    def __init__(self):
        self.fits = 0

    @ember.hookimpl
    def on_fit_start(self, trainer, module):
        self.fits += 1

    @ember.hookimpl
    def on_save_checkpoint(self, checkpoint):
        checkpoint["stateful_plugin"] = self.state_dict()

    @ember.hookimpl
    def on_load_checkpoint(self, checkpoint):
        self.fits = checkpoint["stateful_plugin"]["fits"]

    def state_dict(self):
        return {"fits": self.fits}


def test_fit_validate_test_predict(tiny_module, tiny_datamodule, make_trainer):
    trainer = make_trainer()
    trainer.fit(tiny_module, datamodule=tiny_datamodule)
    assert trainer.global_step == 4 and trainer.current_epoch == 1
    assert "val_loss" in trainer.callback_metrics and "train_loss" in trainer.callback_metrics
    assert trainer.validate(tiny_module, datamodule=tiny_datamodule, verbose=False)[0]["val_loss"] >= 0
    assert "test_loss" in trainer.test(tiny_module, verbose=False)[0]
    predictions = trainer.predict(tiny_module)
    assert [tuple(p.shape) for p in predictions] == [(16, 1)]


def test_quiet_defaults(make_trainer, tmp_path):
    trainer = make_trainer()
    assert trainer.max_epochs == 1 and trainer.default_root_dir == str(tmp_path)
    assert trainer.loggers == [] and trainer.checkpoint_callbacks == []
    assert not [c for c in trainer.callbacks if getattr(c, "fills", None) in ("progress_bar", "model_summary")]
    asked = make_trainer(enable_checkpointing=True, logger=True, max_epochs=3)
    assert asked.checkpoint_callbacks and asked.loggers and asked.max_epochs == 3


def test_fresh_fixtures_start_alike(tiny_module):
    from ember.testing import TinyModule
    import torch

    assert torch.equal(tiny_module.layer.weight, TinyModule().layer.weight)


def test_hook_recorder(tiny_module, make_trainer, hook_recorder):
    make_trainer(callbacks=[hook_recorder], num_sanity_val_steps=0).fit(tiny_module)
    hook_recorder.assert_order(["setup", "on_fit_start", "on_train_epoch_start", "on_train_batch_end", "on_validation_end", "on_train_epoch_end", "on_fit_end", "teardown"])
    assert hook_recorder.count("on_train_batch_end") == 4
    assert hook_recorder.names()[0] == "setup" and hook_recorder.names()[-1] == "teardown"
    assert hook_recorder.calls_of("setup") == [{"stage": "fit"}]
    first_batch = hook_recorder.calls_of("on_train_batch_start")[0]
    assert first_batch == {"batch": ("Tensor[16, 4]", "Tensor[16, 1]"), "batch_idx": 0}
    name, args = hook_recorder.calls[0]
    assert (name, args) == ("setup", {"stage": "fit"})
    with pytest.raises(AssertionError, match="'on_fit_start' .* did not fire after 'on_fit_end'"):
        hook_recorder.assert_order(["on_fit_end", "on_fit_start"])
    with pytest.raises(AssertionError, match="'on_test_start' .* never fired"):
        hook_recorder.assert_order(["on_test_start"])


def test_callback_survives_resume(make_trainer, tiny_datamodule):
    report = assert_survives_resume(Counter, make_trainer, datamodule_factory=lambda: tiny_datamodule)
    assert report.saved_step == 4 and report.resumed_step == 4 and report.final_step == 8
    assert report.restored_state["batches"] == 4 and report.second.batches == 8


def test_plugin_survives_resume(make_trainer):
    report = assert_survives_resume(StatefulPlugin, make_trainer)
    assert report.restored_state == {"fits": 1}


def test_forgetful_callback_is_caught(make_trainer):
    with pytest.raises(AssertionError, match=r"Forgetful did not get its state back from the checkpoint: state\\['best'\\]: .* saved, inf after resume"):
        assert_survives_resume(Forgetful, make_trainer)


def test_same_instance_twice_is_caught(make_trainer):
    one = Counter()
    with pytest.raises(AssertionError, match="returned the same instance twice"):
        assert_survives_resume(lambda: one, make_trainer)


def test_empty_state_is_caught(make_trainer):
    with pytest.raises(AssertionError, match="state_dict\\\\(\\\\) is empty"):
        assert_survives_resume(ember.Callback, make_trainer)
'''


def test_a_project_uses_the_fixtures(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("EMBER_") or v == "PYTEST_DISABLE_PLUGIN_AUTOLOAD"]:
        monkeypatch.delenv(var)
    pytester.makepyfile(test_project=PROJECT_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)


@pytest.mark.slow
def test_opt_in_with_p_when_autoload_is_off(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_it="def test_it(hook_recorder):\n    assert len(hook_recorder) == 0\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(errors=1)  # fixture not found
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "ember").assert_outcomes(passed=1)


# --------------------------------------------------------------------------- the fixtures, used here directly


def test_make_trainer_is_the_quiet_one(make_trainer: Any, tmp_path: Path) -> None:
    trainer = make_trainer()
    assert trainer.max_epochs == 1 and trainer.default_root_dir == str(tmp_path) and trainer.loggers == []


def test_recorder_sees_validate(tiny_module: TinyModule, make_trainer: Any, hook_recorder: HookRecorder) -> None:
    make_trainer(callbacks=[hook_recorder]).validate(tiny_module, verbose=False)
    hook_recorder.assert_order(
        [
            "setup",
            "on_validation_start",
            "on_validation_epoch_start",
            "on_validation_batch_start",
            "on_validation_batch_end",
            "on_validation_batch_start",
            "on_validation_batch_end",
            "on_validation_epoch_end",
            "on_validation_end",
            "teardown",
        ],
        exact=True,
    )
    assert hook_recorder.calls_of("on_validation_batch_end")[1]["batch_idx"] == 1
    with pytest.raises(AssertionError, match="differs at position 0"):
        hook_recorder.assert_order(["teardown"], exact=True)


def test_recorder_limited_to_some_hooks(tiny_module: TinyModule, make_trainer: Any) -> None:
    recorder = HookRecorder(hooks=["on_fit_start", "on_fit_end"])
    make_trainer(callbacks=[recorder]).fit(tiny_module)
    assert recorder.names() == ["on_fit_start", "on_fit_end"]
    with pytest.raises(ValueError, match="Did you mean 'on_fit_start'"):
        HookRecorder(hooks=["on_fit_strat"])


def test_survives_resume_with_the_builtin_early_stopping(make_trainer: Any) -> None:
    from ember.plugins.callbacks.early_stopping import EarlyStopping

    report = assert_survives_resume(lambda: EarlyStopping(monitor="val_loss", patience=5), make_trainer)
    assert report.final_step > report.saved_step


def test_tiny_module_is_an_ember_module(tiny_module: TinyModule) -> None:
    assert isinstance(tiny_module, ember.Module)
