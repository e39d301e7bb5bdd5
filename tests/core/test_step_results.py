"""A training_step result that automatic optimization cannot step on names
``training_step``, what it returned, and what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from ember.errors import UserError
from ember.loops.step_results import TrainingStepError

ALLOWED = "return the loss tensor, a dict with a 'loss' tensor, or None to skip the batch."

CASES = [
    (
        "non-scalar loss",
        lambda m, b, i: (m(b[0]) - b[1]) ** 2,
        "Regressor.training_step returned a loss of shape (4, 1); the loss must be a single number (a tensor with one element): "
        "reduce it, e.g. with .mean() or .sum().",
    ),
    (
        "dict without loss",
        lambda m, b, i: {"los": m.loss(b), "acc": 1.0},
        "Regressor.training_step returned a dict without a 'loss' key (keys: 'los', 'acc'). Is 'los' meant to be 'loss'? "
        f"Under automatic optimization, {ALLOWED}",
    ),
    (
        "dict with a number as loss",
        lambda m, b, i: {"loss": 0.5},
        f"Regressor.training_step returned a dict whose 'loss' is a float (0.5; a Python number has no gradient); {ALLOWED}",
    ),
    (
        "a number",
        lambda m, b, i: m.loss(b).item(),
        None,  # the value varies; checked by prefix below
    ),
    (
        "a list",
        lambda m, b, i: [m.loss(b)],
        f"Regressor.training_step returned a list of 1 item; under automatic optimization, {ALLOWED}",
    ),
    (
        "a detached loss",
        lambda m, b, i: m.loss(b).detach(),
        "Regressor.training_step returned a loss that does not require grad (computed under torch.no_grad(), detached, or from "
        "no trainable parameter); compute it from the module's parameters, or return None to skip the batch.",
    ),
]


@pytest.mark.parametrize(("step", "message"), [(s, m) for _, s, m in CASES], ids=[c[0] for c in CASES])
def test_wrong_training_step_results(h: Any, make_trainer: Any, step: Any, message: str | None) -> None:
    module = h.Regressor()
    module.step_hook = step
    before = h.params_of(module)
    with pytest.raises(TrainingStepError) as info:
        make_trainer(max_epochs=1).fit(module, h.loader(16, 4))
    if message is None:
        assert str(info.value).startswith("Regressor.training_step returned a float (")
        assert str(info.value).endswith(f"a Python number has no gradient); under automatic optimization, {ALLOWED}")
    else:
        assert str(info.value) == message
    assert isinstance(info.value, UserError)
    assert h.same(h.params_of(module), before)  # nothing was stepped


def test_the_same_step_with_accumulation(h: Any, make_trainer: Any) -> None:
    module = h.Regressor()
    module.step_hook = lambda m, b, i: (m(b[0]) - b[1]) ** 2
    with pytest.raises(TrainingStepError, match=r"returned a loss of shape \(4, 1\)"):
        make_trainer(max_epochs=1, accumulate_grad_batches=2).fit(module, h.loader(16, 4))


def test_other_backward_errors_pass_through(h: Any, make_trainer: Any) -> None:
    """A scalar loss that requires grad is not blamed for a backward failure."""

    def inplace(m: Any, b: Any, i: int) -> Any:
        out = m(b[0]).sigmoid()
        out.mul_(2)  # sigmoid's backward needs its output: the in-place change breaks it
        return out.mean()

    module = h.Regressor()
    module.step_hook = inplace
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as info:
        make_trainer(max_epochs=1).fit(module, h.loader(16, 4))
    assert not isinstance(info.value, TrainingStepError)


def test_allowed_results_still_train(h: Any, make_trainer: Any) -> None:
    for step in (lambda m, b, i: {"loss": m.loss(b), "extra": 1}, lambda m, b, i: None if i == 0 else ...):
        module = h.Regressor()
        module.step_hook = step
        trainer = make_trainer(max_epochs=1)
        trainer.fit(module, h.loader(16, 4))
        assert trainer.global_step in (3, 4)
