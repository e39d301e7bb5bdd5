"""Which step methods take ``batch_idx``, read once per run.

Lightning lets a step be written ``training_step(self, batch)``: the trainer
passes ``batch_idx`` only when the method can take it (a parameter named
``batch_idx``, a second positional parameter, or ``*args``). ember reads the
signatures when a run is set up, so the loops pay nothing per step.
"""

from __future__ import annotations

import inspect
from typing import Any

STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def takes_batch_idx(method: Any) -> bool:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: pass everything
        return True
    if any(p.name == "batch_idx" or p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in _POSITIONAL for p in params) >= 2


def step_signatures(module: Any) -> dict[str, bool]:
    """``{step method name: takes batch_idx}`` for ``module``'s bound step methods."""
    return {name: takes_batch_idx(getattr(module, name)) for name in STEP_METHODS if hasattr(module, name)}
