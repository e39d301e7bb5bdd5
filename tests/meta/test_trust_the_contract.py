"""Trust the contract, checked on the source (AST): no module under
``plugins/`` or ``contrib/*/`` probes an attribute that ember documents as
always there.

A plugin's hooks get an ember ``Trainer`` (and its ``Module``); their public
attributes are the contract, so ``getattr(trainer, "log_dir", None)`` or
``hasattr(trainer.strategy, "broadcast")`` only hides a broken contract behind a
default. Refused: ``getattr``/``hasattr`` with a constant name on

- the trainer (``trainer``, ``*_trainer``, ``<anything>.trainer``) when the name
  is a public attribute of :class:`ember.Trainer` (an instance's ``dir()``: its
  properties and the attributes ``__init__`` sets);
- its strategy (``<trainer>.strategy``) when the name is a public attribute of
  :class:`ember.strategies.StrategyBase` (an instance's ``dir()``) or a member of
  the :class:`ember.roles.Strategy` protocol;
- the module (``module``, ``pl_module``, ``self.module``, ``<trainer>.lightning_module``)
  when the name is a public attribute that :class:`ember.Module` adds to
  ``torch.nn.Module``.

Attributes ember does not document there (an optional strategy feature such as
``device_mesh``, a loader's ``sampler``, a user's ``backbone``) may still be
probed. A plugin method that may run without a trainer says so with an explicit
``if trainer is None``. The checker is also run on a bad sample, so a checker
that stops finding anything fails here instead of passing silently.
"""

from __future__ import annotations

import ast
import functools

import pytest
import torch
from test_wall import _plugin_files  # the same plugin and contrib modules the wall checks

import ember
from ember.roles import Strategy
from ember.strategies import StrategyBase

PROBES = ("getattr", "hasattr")


def _public(names: object) -> set[str]:
    return {n for n in names if not n.startswith("_")}  # type: ignore[attr-defined]


@functools.cache
def documented() -> dict[str, frozenset[str]]:
    """The public attribute names of the Trainer, the strategy base and protocol, and the Module."""
    trainer = ember.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    protocol = set(getattr(Strategy, "__protocol_attrs__", ())) or set(Strategy.__annotations__) | set(vars(Strategy))
    return {
        "trainer": frozenset(_public(dir(trainer))),
        "strategy": frozenset(_public(dir(StrategyBase())) | _public(protocol)),
        "module": frozenset(_public(dir(ember.Module())) - _public(dir(torch.nn.Module()))),
    }


def _is_trainer(node: ast.expr) -> bool:
    """``trainer``, ``pl_trainer``, ``self.trainer``, ``module.trainer``..."""
    if isinstance(node, ast.Name):
        return node.id == "trainer" or node.id.endswith("_trainer")
    return isinstance(node, ast.Attribute) and node.attr == "trainer"


def _kind(node: ast.expr) -> str | None:
    """Which documented object ``node`` names: ``"trainer"``, ``"strategy"``, ``"module"`` or ``None``."""
    if _is_trainer(node):
        return "trainer"
    if isinstance(node, ast.Attribute) and _is_trainer(node.value):
        return {"strategy": "strategy", "lightning_module": "module"}.get(node.attr)  # not ``model``: maybe DDP-wrapped
    if isinstance(node, ast.Name) and node.id in ("module", "pl_module"):
        return "module"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr == "module":
        return "module"
    return None


def contract_probes(source: str, names: dict[str, frozenset[str]]) -> list[str]:
    """Every ``getattr``/``hasattr`` in ``source`` of an attribute ``names`` documents on its object."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES and len(node.args) >= 2):
            continue
        target, attr = node.args[0], node.args[1]
        if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
            continue
        kind = _kind(target)
        if kind is not None and attr.value in names[kind]:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


# --------------------------------------------------------------------------- the tests


def test_the_documented_names_are_collected() -> None:
    names = documented()
    assert {"log_dir", "is_global_zero", "world_size", "strategy", "loggers", "train_dataloader", "num_val_batches"} <= names["trainer"]
    assert {"accumulate_grad_batches", "callback_metrics", "state", "max_epochs", "lr_scheduler_configs"} <= names["trainer"]
    assert {"accelerator", "precision", "checkpoint_io", "remove_checkpoint", "broadcast", "root_device", "world_size"} <= names["strategy"]
    assert {"automatic_optimization", "trainer", "example_input_array", "log"} <= names["module"]
    assert not names["module"] & {"forward", "training", "parameters"}  # torch's, not ember's contract
    assert "device_mesh" not in names["strategy"]  # optional: a strategy may have one


def test_no_plugin_probes_a_documented_attribute() -> None:
    names = documented()
    found = []
    for path, module in _plugin_files():
        found += [f"{module}: {hit}" for hit in contract_probes(path.read_text(encoding="utf-8"), names)]
    assert not found, (
        "These read an attribute ember documents as always there through getattr/hasattr; read it directly "
        "(an explicit `if trainer is None` where the method may run without a trainer):\n  " + "\n  ".join(found)
    )


BAD = """
def on_fit_start(self, trainer, module):
    a = getattr(trainer, "log_dir", None)
    b = getattr(self.trainer, "is_global_zero", True)
    c = getattr(trainer.strategy, "broadcast", None)
    d = hasattr(module.trainer, "world_size")
    e = getattr(module, "automatic_optimization", True)
    f = hasattr(pl_trainer.strategy, "root_device")
    g = getattr(trainer.lightning_module, "example_input_array", None)
"""

FINE = """
def on_fit_start(self, trainer, module):
    mesh = getattr(trainer.strategy, "device_mesh", None)  # optional, not documented on every strategy
    sampler = getattr(trainer.train_dataloader, "sampler", None)  # a loader's: duck-typed
    backbone = getattr(module, "backbone", None)  # the user's attribute
    name = getattr(trainer, attr, None)  # not a constant: not this checker's
    fwd = getattr(module, "forward", None)  # torch's, not ember's
    auto = getattr(trainer.model, "automatic_optimization", True)  # the placed module: maybe DDP-wrapped
    size = getattr(loader, "batch_size", None)
    private = getattr(trainer, "_x", None)  # test_wall's
"""


@pytest.mark.parametrize("source", [BAD, FINE], ids=["bad", "fine"])
def test_contract_probes_are_found(source: str) -> None:
    hits = contract_probes(source, documented())
    if source is FINE:
        assert hits == []
        return
    assert [h.split(":")[0] for h in hits] == [f"line {n}" for n in range(3, 10)], hits
