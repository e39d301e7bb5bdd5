"""StrategyBase holds the roles every strategy has; the built-in strategies
store theirs through it (DDP included) instead of each assigning them."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from ember.strategies import (
    DDPSpawnStrategy,
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ParallelStrategy,
    SingleDeviceStrategy,
    StrategyBase,
    setup_module_and_optimizers,
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


def _strategy_files() -> list[Path]:
    return [*(ROOT / "plugins" / "strategies").glob("*.py"), *(ROOT / "contrib").glob("*/*/strategies*.py")]


def test_no_strategy_assigns_the_roles_itself() -> None:
    """Only StrategyBase.__init__ writes ``self.<role> = ...`` (DeepSpeed's
    precision too: StrategyBase's assignment goes through its wrapping property)."""
    found = []
    for path in _strategy_files():
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
    assert found == []


def test_every_strategy_init_calls_super_init() -> None:
    """The role wiring lives in StrategyBase: a strategy's ``__init__`` reaches
    it through ``super().__init__(...)``, never ``SomeBase.__init__(self, ...)``
    (which skipped the bases in between: DDP used to)."""
    checked, problems = [], []
    for path in _strategy_files():
        for cls in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef) and n.name.endswith("Strategy")):
            for init in (f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"):
                checked.append(cls.name)
                calls = [
                    c for c in ast.walk(init) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "__init__"
                ]
                if not any(ast.unparse(c.func) == "super().__init__" for c in calls):
                    problems.append(f"{path.name} {cls.name}: no super().__init__")
                problems += [f"{path.name} {cls.name}: {ast.unparse(c.func)}" for c in calls if ast.unparse(c.func) != "super().__init__"]
    assert {"DDPStrategy", "FSDPStrategy", "DeepSpeedStrategy", "SingleDeviceStrategy", "XLADDPStrategy"} <= set(checked)
    assert problems == []


def test_shared_members_live_on_strategy_base() -> None:
    """DDP no longer borrows them from SingleDeviceStrategy: it is a ParallelStrategy only."""
    assert not issubclass(DDPStrategy, SingleDeviceStrategy)
    for name in ("optimizer_step", "save_checkpoint", "load_checkpoint", "remove_checkpoint", "setup_module_and_optimizers"):
        assert getattr(DDPStrategy, name) is getattr(StrategyBase, name) is getattr(SingleDeviceStrategy, name), name


class _Engine(torch.nn.Module):
    """What an engine-style strategy trains through: its forward is the step."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, batch: Any, batch_idx: int) -> Any:
        self.calls += 1
        return self.module.training_step(batch, batch_idx)


class _EngineStrategy(SingleDeviceStrategy):
    """A third-party strategy using the public seam, as DeepSpeed does."""

    def setup_module_and_optimizers(
        self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]
    ) -> tuple[torch.nn.Module, list[Any]]:
        self.engine = _Engine(module)
        self.given = list(optimizers)
        return self.engine, [torch.optim.SGD(module.parameters(), lr=0.0)]  # lr 0: only its own optimizer steps


def test_setup_module_and_optimizers_decides_what_the_loop_trains(make_trainer: Any, tiny_module: Any) -> None:
    strategy = _EngineStrategy()
    trainer = make_trainer(strategy=strategy, max_epochs=1, limit_val_batches=0)
    before = {k: v.clone() for k, v in tiny_module.state_dict().items()}
    trainer.fit(tiny_module)
    assert trainer.model is strategy.engine and strategy.engine.calls == trainer.global_step > 0
    assert trainer.optimizers[0] is not strategy.given[0] and trainer.optimizers[0].param_groups[0]["lr"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in tiny_module.state_dict().items())  # lr 0: the returned optimizer stepped


def test_the_default_keeps_the_module_and_sets_up_the_optimizers() -> None:
    module, optimizer = torch.nn.Linear(2, 1), []
    strategy = DDPStrategy(devices=1)
    assert strategy.setup_module_and_optimizers(module, optimizer) == (module, [])
    plain = SimpleNamespace(setup_optimizers=lambda opts: ["set up", *opts])  # meets only the protocol
    assert setup_module_and_optimizers(plain, module, ["o"]) == (module, ["set up", "o"])
