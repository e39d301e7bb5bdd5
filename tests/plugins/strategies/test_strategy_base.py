"""StrategyBase holds the roles every strategy has; the built-in strategies
store theirs through it (DDP included) instead of each assigning them."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from ember.strategies import (
    DDPSpawnStrategy,
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ParallelStrategy,
    SingleDeviceStrategy,
    StrategyBase,
)

ROOT = Path(__file__).resolve().parents[3]
ROLES = ("accelerator", "precision", "checkpoint_io", "environment")


@pytest.mark.parametrize("cls", [SingleDeviceStrategy, DDPStrategy, DDPSpawnStrategy, FSDPStrategy, DeepSpeedStrategy])
def test_every_builtin_strategy_stores_its_roles_through_strategy_base(cls: type) -> None:
    assert issubclass(cls, StrategyBase)
    roles = {name: SimpleNamespace(name=name) for name in ROLES}
    strategy = cls(**roles)
    for name in ROLES:
        value = getattr(strategy, name)
        if cls is DeepSpeedStrategy and name == "precision":
            value = value.inner  # DeepSpeed wraps the precision it is given
        assert value is roles[name], name


def test_lightning_names_reach_the_same_roles() -> None:
    env, precision = object(), object()
    strategy = DDPStrategy(cluster_environment=env, precision_plugin=precision, parallel_devices=[])
    assert strategy.environment is env and strategy.precision is precision and isinstance(strategy, ParallelStrategy)


def test_no_strategy_assigns_the_roles_itself() -> None:
    """Only StrategyBase.__init__ writes ``self.<role> = ...``; DeepSpeed alone
    sets its precision again, through its own wrapping property."""
    found = []
    files = [*(ROOT / "plugins" / "strategies").glob("*.py"), *(ROOT / "contrib").glob("*/*/strategies.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                for target in (t for a in ast.walk(node) if isinstance(a, ast.Assign) for t in a.targets):
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                        and target.attr in ROLES
                    ):
                        found.append(f"{path.name} self.{target.attr}")
    assert found == ["deepspeed.py self.precision"]
