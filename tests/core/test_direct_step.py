"""The automatic step's direct path: with a strategy and a precision that only
pass ``backward`` and ``optimizer_step`` on, the loop makes those calls itself.
Anything that overrides them, or hooks around them, still gets its calls."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ember.loops.optimization import AutomaticOptimization
from ember.plugins.precision.true_precision import TruePrecision
from ember.plugins.strategies.single_device import SingleDeviceStrategy
from ember.roles import StepsDirectly
from ember.testing import TinyModule, quiet_trainer


class RecordingPrecision(TruePrecision):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.calls.append("backward")
        super().backward(loss, module)

    def optimizer_step(self, optimizer: Any, closure: Any = None) -> Any:
        self.calls.append("optimizer_step")
        return super().optimizer_step(optimizer, closure)


class RecordingStrategy(SingleDeviceStrategy):
    calls: list[str] = []

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.calls.append("backward")
        super().backward(loss, module)


def _direct(trainer: Any) -> bool:
    return AutomaticOptimization(trainer).direct


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_the_plain_step_is_direct_and_trains_as_through_the_roles(tmp_path: Any) -> None:
    plain, recorded = TinyModule(), TinyModule()
    trainer = quiet_trainer(tmp_path / "a", max_epochs=2)
    trainer.fit(plain)
    assert _direct(trainer)
    precision = RecordingPrecision()
    other = quiet_trainer(tmp_path / "b", max_epochs=2, plugins=[precision])
    other.fit(recorded)
    assert not _direct(other)
    assert precision.calls.count("backward") == precision.calls.count("optimizer_step") == other.global_step == 8
    for a, b in zip(_weights(plain), _weights(recorded), strict=True):
        assert torch.equal(a, b)


def test_a_precision_subclass_that_overrides_a_call_is_not_bypassed() -> None:
    assert isinstance(TruePrecision(), StepsDirectly) and TruePrecision().steps_directly
    assert not RecordingPrecision().steps_directly


def test_a_strategy_that_overrides_backward_gets_it(tmp_path: Any) -> None:
    RecordingStrategy.calls = []
    trainer = quiet_trainer(tmp_path, max_epochs=1, strategy=RecordingStrategy(device=torch.device("cpu")))
    trainer.fit(TinyModule())
    assert not _direct(trainer)
    assert RecordingStrategy.calls == ["backward"] * 4


@pytest.mark.parametrize(
    "kwargs",
    [{"accumulate_grad_batches": 2}, {"gradient_clip_val": 1.0}, {"precision": "bf16-mixed"}],
    ids=["accumulation", "clipping", "autocast"],
)
def test_steps_that_need_more_are_not_direct(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=1, **kwargs)
    trainer.fit(TinyModule())
    assert not _direct(trainer)


def test_a_skipped_batch_does_not_step_on_the_direct_path(tmp_path: Any) -> None:
    class SkipOdd(TinyModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return None if batch_idx % 2 else super().training_step(batch, batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(SkipOdd())
    assert _direct(trainer) and trainer.global_step == 2
