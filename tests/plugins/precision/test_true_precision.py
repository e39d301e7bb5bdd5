"""``32-true`` and ``64-true``: dtypes of parameters and inputs, and real fits."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
import torch

from ember.plugins.precision.true_precision import TruePrecision, double_precision, single_precision

Pair = namedtuple("Pair", ["x", "label"])


def test_single_precision_changes_nothing() -> None:
    p = single_precision()
    assert (p.name, p.dtype) == ("32-true", torch.float32)
    module = torch.nn.Linear(2, 2)
    assert p.convert_module(module) is module
    batch = (torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    assert p.convert_input(batch) is batch


def test_double_precision_converts_modules_and_floating_inputs_only() -> None:
    p = double_precision()
    assert (p.name, p.dtype) == ("64-true", torch.float64)
    module = p.convert_module(torch.nn.Linear(2, 2))
    assert all(t.dtype == torch.float64 for t in module.parameters())
    batch = {
        "x": torch.zeros(3, 2),
        "ids": torch.arange(3),
        "pair": Pair(torch.ones(1), torch.tensor([1])),
        "items": [torch.zeros(1, dtype=torch.float16)],
        "name": "s",
    }
    out = p.convert_input(batch)
    assert out["x"].dtype == torch.float64 and out["items"][0].dtype == torch.float64
    assert out["ids"].dtype == torch.int64 and out["pair"].label.dtype == torch.int64
    assert isinstance(out["pair"], Pair) and out["pair"].x.dtype == torch.float64
    assert out["name"] == "s"


def test_context_backward_and_step() -> None:
    p = TruePrecision()
    with p.forward_context(), p.forward_context():  # reusable, reentrant
        w = torch.nn.Parameter(torch.tensor([2.0]))
        loss = (w * 3).sum()
    p.backward(loss, torch.nn.Linear(1, 1))
    assert w.grad.item() == 3.0
    opt = torch.optim.SGD([w], lr=0.5)
    calls: list[int] = []

    def closure() -> torch.Tensor:
        calls.append(1)
        return loss.detach()

    p.unscale_gradients(opt)
    p.optimizer_step(opt, closure)
    assert calls == [1] and w.item() == pytest.approx(0.5)
    p.optimizer_step(opt)
    assert w.item() == pytest.approx(-1.0)
    assert p.state_dict() == {}
    p.load_state_dict({})


@pytest.mark.parametrize(
    "precision,dtype",
    [
        ("64-true", torch.float64),
        ("64", torch.float64),
        (64, torch.float64),
        ("32-true", torch.float32),
        (32, torch.float32),
        (None, torch.float32),
    ],
)
def test_fit_in_each_precision(make_trainer: Any, regressor: Any, loaders: Any, precision: Any, dtype: torch.dtype) -> None:
    seen: list[torch.dtype] = []

    class Model(regressor):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(batch[0].dtype)
            return super().training_step(batch, batch_idx)

    train, val = loaders
    model = Model(lr=0.05)
    trainer = make_trainer(max_epochs=5, precision=precision)
    assert trainer.precision == ("32-true" if dtype == torch.float32 else "64-true")
    [before] = trainer.validate(model, val, verbose=False)
    trainer.fit(model, train, val)
    [after] = trainer.validate(model, val, verbose=False)
    assert all(p.dtype == dtype for p in model.parameters())
    assert set(seen) == {dtype}
    assert after["val_loss"] < before["val_loss"] * 0.5
    preds = trainer.predict(model, val)
    assert preds[0].dtype == dtype


def test_unknown_precision_lists_registered_names(make_trainer: Any) -> None:
    with pytest.raises(LookupError, match=r"No precision named '64-tru'.*Registered: .*32-true.*64-true.*Did you mean '64-true'"):
        make_trainer(precision="64-tru")
