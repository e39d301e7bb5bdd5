"""What ``training_step`` may return under automatic optimization, and the
errors that say what it returned instead.

Allowed: the loss (a tensor with one element that requires grad), a dict
whose ``"loss"`` is such a tensor, or ``None`` to skip the batch. The common
case (a tensor) is not inspected at all: a non-scalar or gradient-free loss
is recognised only when backward fails on it.
"""

from __future__ import annotations

from typing import Any

import torch

from ember.errors import UserError
from ember.suggest import closest

ALLOWED = "return the loss tensor, a dict with a 'loss' tensor, or None to skip the batch"


class TrainingStepError(UserError, TypeError, ValueError):
    """``training_step`` returned something automatic optimization cannot
    step on. (A ``TypeError`` and a ``ValueError``, as the checks it
    replaces raised one or the other.)"""


def loss_of(output: Any, module: Any) -> torch.Tensor | None:
    """The loss inside a ``training_step`` output that is not a tensor."""
    if output is None:
        return None
    if isinstance(output, dict):
        if "loss" not in output:
            keys = [str(k) for k in output]
            match = closest("loss", keys)
            hint = f" Is {match!r} meant to be 'loss'?" if match else ""
            raise TrainingStepError(
                f"{_step(module)} returned a dict without a 'loss' key (keys: {', '.join(map(repr, keys)) or 'none'}).{hint} "
                f"Under automatic optimization, {ALLOWED}."
            )
        loss = output["loss"]
        if not isinstance(loss, torch.Tensor):
            raise TrainingStepError(f"{_step(module)} returned a dict whose 'loss' is {describe(loss)}; {ALLOWED}.")
        return loss
    raise TrainingStepError(f"{_step(module)} returned {describe(output)}; under automatic optimization, {ALLOWED}.")


def bad_loss(loss: torch.Tensor, module: Any) -> TrainingStepError | None:
    """Why backward failed on ``loss``, when the loss itself is the reason."""
    if loss.numel() != 1:
        return TrainingStepError(
            f"{_step(module)} returned a loss of shape {tuple(loss.shape)}; the loss must be a single number "
            "(a tensor with one element): reduce it, e.g. with .mean() or .sum()."
        )
    if not loss.requires_grad:
        return TrainingStepError(
            f"{_step(module)} returned a loss that does not require grad (computed under torch.no_grad(), detached, "
            "or from no trainable parameter); compute it from the module's parameters, or return None to skip the batch."
        )
    return None


def describe(value: Any) -> str:
    """``float (0.5)``, ``Tensor of shape (8, 1)``, ``list of 2``: a returned value in a few words."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (int, float, bool)):
        return f"a {type(value).__name__} ({value!r}; a Python number has no gradient)"
    if isinstance(value, str):
        return f"a str ({value[:40]!r})"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__qualname__}"


def _step(module: Any) -> str:
    return f"{type(module).__name__}.training_step"
