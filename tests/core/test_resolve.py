"""Choosing roles by name: what ``strategy="auto"`` means depends on the accelerator."""

from __future__ import annotations

from typing import Any

import torch

import ember
from ember.plugins.accelerators.cpu import CPUAccelerator
from ember.plugins.strategies.single_device import SingleDeviceStrategy


class _SpecialStrategy(SingleDeviceStrategy):
    name = "special"


class _OwnEnginesAccelerator(CPUAccelerator):
    """Stands for hardware such as XLA that needs a strategy of its own."""

    name = "own_engines"

    @staticmethod
    def default_strategy(num_devices: int, num_nodes: int) -> str:
        return "special"


class _Plugin:
    @ember.hookimpl
    def register_roles(self, registry: Any) -> None:
        registry.add("accelerator", "own_engines", _OwnEnginesAccelerator)
        registry.add("strategy", "special", _SpecialStrategy)


def test_auto_strategy_follows_the_accelerators_suggestion() -> None:
    trainer = ember.Trainer(accelerator="own_engines", plugins=[_Plugin()], logger=False)
    assert isinstance(trainer.strategy, _SpecialStrategy)
    assert trainer.strategy.root_device == torch.device("cpu")


def test_auto_strategy_without_a_suggestion_is_single_device() -> None:
    trainer = ember.Trainer(accelerator="cpu", plugins=[_Plugin()], logger=False)
    assert type(trainer.strategy) is SingleDeviceStrategy


def test_an_explicit_strategy_wins_over_the_suggestion() -> None:
    trainer = ember.Trainer(accelerator="own_engines", strategy="single_device", plugins=[_Plugin()], logger=False)
    assert type(trainer.strategy) is SingleDeviceStrategy
