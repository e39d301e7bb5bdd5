"""``ember.optim.step_with_closure``: ``closure()`` then ``step()`` for the
``torch.optim`` optimizers that call their closure once, the closure handed to
``step`` otherwise; the weights are the same either way."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ember.loops.optimization import AutomaticOptimization
from ember.optim import step_with_closure
from ember.testing import TinyModule, quiet_trainer


def _setup(cls: type, **kwargs: Any) -> tuple[torch.nn.Linear, Any, Any, list[str]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = cls(model.parameters(), **kwargs)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    events: list[str] = []

    def closure() -> torch.Tensor:
        events.append("closure")
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return model, optimizer, closure, events


@pytest.mark.parametrize("cls, kwargs", [(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}), (torch.optim.Adam, {"lr": 0.01}), (torch.optim.AdamW, {})])
def test_same_weights_and_result_as_step_with_the_closure(cls: type, kwargs: dict[str, Any]) -> None:
    ours, theirs = _setup(cls, **kwargs), _setup(cls, **kwargs)
    for _ in range(5):
        a = step_with_closure(ours[1], ours[2])
        b = theirs[1].step(theirs[2])
        assert torch.equal(a, b)
    for p, q in zip(ours[0].parameters(), theirs[0].parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_torch_optimizer_steps_after_the_closure_without_it() -> None:
    _, optimizer, closure, events = _setup(torch.optim.SGD, lr=0.1)
    step = optimizer.step

    def recording_step(closure: Any = None) -> Any:
        events.append(f"step(closure={closure is not None})")
        return step(closure)

    optimizer.step = recording_step
    step_with_closure(optimizer, closure)
    assert events == ["closure", "step(closure=False)"]


def test_lbfgs_gets_its_closure_and_evaluates_it_several_times() -> None:
    _, optimizer, closure, events = _setup(torch.optim.LBFGS, lr=0.5, max_iter=5)
    step_with_closure(optimizer, closure)
    assert len(events) > 1


def test_an_optimizer_from_elsewhere_gets_its_closure() -> None:
    class Custom(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            self.got = closure
            return super().step(closure)

    _, optimizer, closure, events = _setup(Custom, lr=0.1)
    step_with_closure(optimizer, closure)
    assert optimizer.got is closure and events == ["closure"]


def test_step_pre_hooks_still_run_before_the_closure() -> None:
    _, optimizer, closure, events = _setup(torch.optim.SGD, lr=0.1)
    optimizer.register_step_pre_hook(lambda *args: events.append("pre_hook"))
    step_with_closure(optimizer, closure)
    assert events == ["pre_hook", "closure"]


def test_the_closure_runs_under_grad_mode_even_inside_no_grad() -> None:
    _, optimizer, closure, events = _setup(torch.optim.SGD, lr=0.1)
    with torch.no_grad():
        loss = step_with_closure(optimizer, closure)
    assert events == ["closure"] and loss.requires_grad


def test_lbfgs_trains_through_the_trainer(tmp_path: Any) -> None:
    class LBFGSModule(TinyModule):
        calls = 0

        def configure_optimizers(self) -> Any:
            return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.calls += 1
            return super().training_step(batch, batch_idx)

    module = LBFGSModule()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    trainer.fit(module)
    assert trainer.global_step == 4 and module.calls > 4
    # The plain step is the loop's direct path, which hands LBFGS to the general one.
    assert AutomaticOptimization(trainer).direct
