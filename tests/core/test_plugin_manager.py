"""The plugin manager against real installed distributions.

``tests/dists`` holds three small distributions that the ``ember_dists``
fixture (tests/conftest.py) builds and installs into a temporary directory:
``ember-dummy-plugin`` (a working plugin), ``ember-broken-plugin`` (raises at
import) and ``ember-typo-plugin`` (implements a misspelled hook). Their entry
points are found through ``importlib.metadata`` exactly as for any installed
plugin.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from ember.plugin_manager import AutoloadSettings, EmberPluginWarning, PluginManager, default_plugin_manager
from ember.roles import UnknownNameError

EXTERNAL = {"dummy", "broken", "typo"}


def settings(**env: str) -> AutoloadSettings:
    return AutoloadSettings.from_env(env)


def external_loaded(pm: PluginManager) -> set[str]:
    return {name for name, _ in pm.list_name_plugin() if name in EXTERNAL}


def failure(pm: PluginManager, name: str) -> Any:
    matches = [f for f in pm.failures if f.name == name]
    assert matches, f"no failure recorded for {name!r}: {pm.failures}"
    return matches[0]


# --------------------------------------------------------------------------- discovery


def test_entry_points_are_discovered(with_dists: Path) -> None:
    pm = default_plugin_manager(settings())
    assert external_loaded(pm) == {"dummy"}
    source = pm.sources["dummy"]
    assert (source.kind, source.distribution, source.version, source.target) == (
        "entrypoint",
        "ember-dummy-plugin",
        "0.3.1",
        "ember_dummy_plugin",
    )
    assert pm.hooks_of("dummy") == ["on_fit_start", "register_roles"]
    assert {f.name for f in pm.failures} == {"broken", "typo"}


def test_broken_plugin_is_reported_with_distribution_and_version(with_dists: Path) -> None:
    pm = default_plugin_manager(settings())
    broken = failure(pm, "broken")
    assert (broken.distribution, broken.version, broken.target) == ("ember-broken-plugin", "1.2.0", "ember_broken_plugin")
    assert broken.error == "ImportError: no module named 'not_there'"
    assert "ember_broken_plugin" in broken.traceback
    text = broken.describe()
    assert "ember-broken-plugin 1.2.0" in text and "pip uninstall ember-broken-plugin" in text and "EMBER_DISABLE_PLUGINS=broken" in text
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm.warn_failures()
    messages = [str(w.message) for w in caught if issubclass(w.category, EmberPluginWarning)]
    assert any("ember-broken-plugin" in m for m in messages) and any("ember-typo-plugin" in m for m in messages)


def test_typo_plugin_names_the_closest_hook(with_dists: Path) -> None:
    pm = default_plugin_manager(settings())
    typo = failure(pm, "typo")
    assert (typo.distribution, typo.version) == ("ember-typo-plugin", "0.0.7")
    assert "PluginValidationError" in typo.error
    assert "'on_train_batch_ends'" in typo.error and "Did you mean 'on_train_batch_end'?" in typo.error
    assert not pm.has_plugin("typo")  # rejected, not half-registered
    assert pm.hook.on_train_batch_end.get_hookimpls() == []


def test_autoload_disabled_loads_no_entry_point(with_dists: Path) -> None:
    pm = default_plugin_manager(settings(EMBER_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert external_loaded(pm) == set()
    assert pm.failures == []
    assert pm.has_plugin("ember.plugins.strategies.single_device")  # built-ins still load


def test_autoload_disabled_with_allow_list(with_dists: Path) -> None:
    pm = default_plugin_manager(settings(EMBER_DISABLE_PLUGIN_AUTOLOAD="1", EMBER_PLUGINS="dummy"))
    assert external_loaded(pm) == {"dummy"} and pm.failures == []


@pytest.mark.parametrize("allow", ["dummy", "ember-dummy-plugin"])
def test_allow_list_by_entry_point_or_distribution_name(with_dists: Path, allow: str) -> None:
    pm = default_plugin_manager(settings(EMBER_PLUGINS=allow))
    assert external_loaded(pm) == {"dummy"}
    assert pm.failures == []  # broken and typo were never imported


def test_allow_list_from_stack_settings(with_dists: Path) -> None:
    pm = default_plugin_manager(settings().merged(enable=["dummy"], autoload=False))
    assert external_loaded(pm) == {"dummy"} and pm.failures == []


@pytest.mark.parametrize("deny", ["broken,typo", "ember-broken-plugin,ember-typo-plugin"])
def test_disable_by_name(with_dists: Path, deny: str) -> None:
    pm = default_plugin_manager(settings(EMBER_DISABLE_PLUGINS=deny))
    assert external_loaded(pm) == {"dummy"}
    assert pm.failures == []
    assert {"broken", "typo"} <= set(pm.disabled)


def test_disable_wins_over_allow(with_dists: Path) -> None:
    pm = default_plugin_manager(settings(EMBER_PLUGINS="dummy", EMBER_DISABLE_PLUGINS="dummy"))
    assert external_loaded(pm) == set() and "dummy" in pm.disabled


def test_disable_builtin_by_short_name(with_dists: Path) -> None:
    pm = default_plugin_manager(settings(EMBER_DISABLE_PLUGINS="early_stopping"))
    assert not pm.has_plugin("ember.plugins.callbacks.early_stopping")
    assert "ember.plugins.callbacks.early_stopping" in pm.disabled
    assert "early_stopping" not in pm.build_registry().names("callback")


# --------------------------------------------------------------------------- roles


def test_roles_of_the_dummy_plugin(with_dists: Path) -> None:
    registry = default_plugin_manager(settings(EMBER_PLUGINS="dummy")).build_registry()
    mine = {(e.kind, e.name) for e in registry.entries() if e.plugin == "dummy"}
    assert mine == {("callback", "dummy_callback"), ("logger", "dummy_logger"), ("strategy", "dummy_strategy")}
    counter = registry.create("callback", "dummy_callback")
    import ember

    assert isinstance(counter, ember.Callback) and not counter.counts
    logger = registry.create("logger", "dummy_logger", path="x.jsonl")
    assert isinstance(logger, ember.Logger)


def test_unknown_role_name_lists_registered_names(with_dists: Path) -> None:
    registry = default_plugin_manager(settings(EMBER_PLUGINS="dummy")).build_registry()
    with pytest.raises(UnknownNameError) as info:
        registry.create("callback", "dumy_callback")
    message = str(info.value)
    assert "No callback named 'dumy_callback' is registered" in message
    assert "dummy_callback" in message and "model_checkpoint" in message
    assert "Did you mean 'dummy_callback'?" in message and "ember plugins" in message
    with pytest.raises(UnknownNameError, match="Did you mean 'dummy_strategy'"):
        registry.create("strategy", "dummy_strategi")


def test_names_of_a_disabled_plugin_are_unknown(with_dists: Path) -> None:
    registry = default_plugin_manager(settings(EMBER_DISABLE_PLUGINS="dummy")).build_registry()
    with pytest.raises(UnknownNameError, match="may be missing or disabled"):
        registry.entry("strategy", "dummy_strategy")


def test_stack_plugins_section_controls_the_registry(with_dists: Path, tmp_path: Path) -> None:
    from ember.stack import StackError, load_stack

    (tmp_path / "ember.toml").write_text('[plugins]\nautoload = false\nenable = ["dummy"]\n[[callbacks]]\nname = "dummy_callback"\n')
    stack = load_stack(None, tmp_path, [], {})
    assert stack.callbacks[0].name == "dummy_callback"
    (tmp_path / "ember.toml").write_text('[plugins]\ndisable = ["dummy"]\n[[callbacks]]\nname = "dummy_callback"\n')
    with pytest.raises(StackError, match=r"ember.toml: callbacks\[0\].name: no callback named 'dummy_callback' is registered"):
        load_stack(None, tmp_path, [], {})


# --------------------------------------------------------------------------- a real run with the dummy plugin

needs_trainer = pytest.mark.skipif(importlib.util.find_spec("ember.trainer") is None, reason="ember.trainer is not written yet")


def _tiny() -> tuple[Any, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import ember

    class Tiny(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss, on_step=True)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    return Tiny(), DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


@needs_trainer
def test_dummy_strategy_callback_and_logger_in_a_real_fit(with_dists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ember_dummy_plugin
    from ember_dummy_plugin.strategy import DummyStrategy

    import ember

    monkeypatch.setenv("EMBER_PLUGINS", "dummy")
    registry = default_plugin_manager(AutoloadSettings.from_env()).build_registry()
    counter = registry.create("callback", "dummy_callback")
    logger = registry.create("logger", "dummy_logger", path=str(tmp_path / "metrics.jsonl"))
    fit_starts = ember_dummy_plugin.FIT_STARTS
    model, loader = _tiny()
    trainer = ember.Trainer(
        max_epochs=2,
        strategy="dummy_strategy",
        callbacks=[counter],
        logger=[logger],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    assert isinstance(trainer.strategy, DummyStrategy) and trainer.strategy.is_dummy
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.strategy.setup_module_calls == 1
    assert ember_dummy_plugin.FIT_STARTS == fit_starts + 1  # the plugin's own @hookimpl fired
    assert counter.counts["on_train_batch_end"] == 8 and counter.counts["on_train_epoch_end"] == 2
    assert counter.counts["on_fit_start"] == 1 and counter.counts["teardown"] == 1
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "metrics" in r]
    assert steps and all("train_loss" in r["metrics"] or "epoch" in r["metrics"] for r in steps)


@needs_trainer
def test_broken_plugins_only_warn_when_a_trainer_is_built(with_dists: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ember

    with pytest.warns(EmberPluginWarning) as record:
        ember.Trainer(max_epochs=1, enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False)
    text = "\n".join(str(w.message) for w in record)
    assert "ember-broken-plugin 1.2.0" in text and "Did you mean 'on_train_batch_end'?" in text


def test_dev_environment_stays_clean() -> None:
    """The fixture distributions are visible only where a test asks for them."""
    code = "import importlib.metadata as m; print(sorted(e.name for e in m.entry_points(group='ember.plugins')))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert not EXTERNAL & set(json.loads(out.stdout.replace("'", '"')))


def test_one_plugin_manager_assembly() -> None:
    """Built-ins and entry points are loaded in one place,
    ``default_plugin_manager``: no other module calls the loaders."""
    import ast

    root = Path(__file__).resolve().parents[2]
    files = [*(root / "core").rglob("*.py"), *(root / "plugins").rglob("*.py"), *(root / "contrib").rglob("*.py")]
    found = []
    for path in files:
        if path.name == "plugin_manager.py" or "templates" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("load_builtins", "load_entrypoints"):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.attr}")
    assert found == []
