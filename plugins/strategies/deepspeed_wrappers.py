"""What the trainer holds under ``strategy='deepspeed'`` in place of the
user's optimizer and precision: :class:`DeepSpeedOptimizer` (learning rates
and param groups are the user's optimizer's; zeroing, stepping and state are
the engine's) and :class:`DeepSpeedPrecision` (the forward context and input
conversion stay the user's precision's; loss scaling and casting are the
engine's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ember.optim import OptimizerWrapper

if TYPE_CHECKING:
    from ember.plugins.strategies.deepspeed import DeepSpeedStrategy

#: What ``optimizer.state_dict()`` returns under this strategy: the real state is in DeepSpeed's files.
OPTIMIZER_MARKER = {"deepspeed": "optimizer state is in the DeepSpeed checkpoint directory"}


class DeepSpeedOptimizer(OptimizerWrapper):
    """What the trainer sees as its optimizer: forwards to the user's optimizer
    (learning rates, ``param_groups`` for LR monitors), while zeroing, stepping
    and state belong to the DeepSpeed engine."""

    def __init__(self, strategy: DeepSpeedStrategy, optimizer: torch.optim.Optimizer) -> None:
        self._strategy = strategy
        self.optimizer = optimizer

    @property
    def defaults(self) -> Any:
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The engine clears gradients after every step; nothing to do here."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return self._strategy.optimizer_step(self, closure)

    def state_dict(self) -> dict[str, Any]:
        return dict(OPTIMIZER_MARKER)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state == OPTIMIZER_MARKER:
            return  # engine.load_checkpoint restored it already
        raise ValueError(
            "strategy='deepspeed' restores optimizer state from DeepSpeed checkpoint directories only; this checkpoint "
            "holds a plain optimizer state dict (was it written by another strategy?)."
        )


class DeepSpeedPrecision:
    """The user's precision plugin, minus what the engine does itself (loss
    scaling, casting the module): the forward context and input conversion
    stay, backward and step are the engine's."""

    scales_gradients = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.converts_input = getattr(inner, "converts_input", True)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.inner, name)

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # the engine casts for fp16 / bf16

    def convert_input(self, batch: Any) -> Any:
        return self.inner.convert_input(batch)

    def forward_context(self) -> Any:
        return self.inner.forward_context()

    def unscale_gradients(self, optimizer: Any) -> None:
        pass

    def backward(self, loss: torch.Tensor, module: Any) -> None:  # pragma: no cover - the strategy calls the engine
        raise RuntimeError("under strategy='deepspeed' the engine runs the backward pass")

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any] | None = None) -> Any:  # pragma: no cover
        raise RuntimeError("under strategy='deepspeed' the engine steps the optimizer")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
