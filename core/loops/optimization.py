"""One optimization step: automatic (the trainer steps) or manual (the module does)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ember.loops.step_results import bad_loss, loss_of
from ember.module import Module
from ember.optim import OptimizerWrapper, closure_may_run_first
from ember.roles import SkipsGradientSync, StepsDirectly, scales_gradients
from ember.strategies import StrategyBase

if TYPE_CHECKING:
    from ember.trainer import Trainer


class _SkipStep(Exception):
    """Raised out of the closure when ``training_step`` returned ``None`` and
    nothing was accumulated: the optimizer must not step at all."""


class OptimizerHandle(OptimizerWrapper):
    """What ``self.optimizers()`` returns: the optimizer, whose ``step`` also
    fires the step hooks and advances ``global_step``. Everything else is
    forwarded to the wrapped optimizer."""

    def __init__(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> None:
        self._trainer = trainer
        self.optimizer = optimizer

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        trainer = self._trainer
        module = trainer.module

        def after_closure() -> Any:
            result = closure() if closure is not None else None
            _before_step(trainer, module, self.optimizer)
            return result

        if closure is None:
            _before_step(trainer, module, self.optimizer)
            output = trainer.strategy.optimizer_step(self.optimizer, None)
        else:
            output = trainer.strategy.optimizer_step(self.optimizer, after_closure)
        trainer.state.global_step += 1
        return output

    def zero_grad(self, set_to_none: bool = True) -> None:
        d = self._trainer._dispatch
        if d.on_before_zero_grad:
            for fn in d.on_before_zero_grad:
                fn(self._trainer, self._trainer.module, self.optimizer)
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def _before_step(trainer: Trainer, module: Any, optimizer: torch.optim.Optimizer) -> None:
    """Unscale, fire ``on_before_optimizer_step``, clip (in that order)."""
    trainer.strategy.precision.unscale_gradients(optimizer)
    hooks = trainer._dispatch.on_before_optimizer_step
    if hooks:
        for fn in hooks:
            fn(trainer, module, optimizer)
    if trainer.gradient_clip_val or trainer._clipping_overridden:
        module.configure_gradient_clipping(optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)


def _explain_loss(exc: RuntimeError, loss: Any, module: Any) -> None:
    """Raise, from ``exc``, the one-line error naming what is wrong with a
    malformed loss whose backward failed; return when the loss looks fine
    (the caller then re-raises ``exc`` itself)."""
    problem = bad_loss(loss, module)
    if problem is not None:
        raise problem from exc


def backward(trainer: Trainer, loss: torch.Tensor) -> None:
    """The backward pass with its hooks, through the strategy and precision."""
    d = trainer._dispatch
    module = trainer.module
    if d.on_before_backward:
        for fn in d.on_before_backward:
            fn(trainer, module, loss)
    trainer.strategy.backward(loss, trainer.state.placed_module)
    if d.on_after_backward:
        for fn in d.on_after_backward:
            fn(trainer, module)


class AutomaticOptimization:
    """The trainer's step for ``automatic_optimization = True``.

    Order per batch: ``training_step`` → (first batch of an accumulation
    window) ``on_before_zero_grad``, ``zero_grad`` → ``on_before_backward`` →
    backward → ``on_after_backward``; on the last batch of the window the
    optimizer steps with that as its closure (so LBFGS-style optimizers work),
    after unscaling, ``on_before_optimizer_step`` and clipping. When nothing
    observes ``zero_grad`` the gradients are set to None before
    ``training_step`` instead (see ``early_zero_grad``).

    The closures are bound methods made once per epoch, with the batch passed
    through attributes: nothing is allocated per step.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.state = trainer.state  # global_step is advanced on every step
        self.module = module = trainer.module
        self.placed = trainer.state.placed_module
        self.precision = trainer.strategy.precision
        self.optimizer_step = trainer.strategy.optimizer_step
        self.optimizer = trainer.optimizers[0]
        self.accumulate = trainer.accumulate_grad_batches
        self.dispatch = trainer._dispatch
        cls = type(module)
        self.custom_step = cls.optimizer_step is not Module.optimizer_step
        self.custom_zero_grad = cls.optimizer_zero_grad is not Module.optimizer_zero_grad
        self.window_has_grads = False
        # True between the batches of an unfinished accumulation window: the
        # parameters' .grad hold what a checkpoint must carry for exact resume.
        self.mid_window = False
        self.output: Any = None
        self.batch: Any = None
        self.batch_idx = 0
        self.first = True
        self.closure = self._closure
        # The step as a callable of (batch, batch_idx), chosen once: training_step(self, batch) gets no index.
        target = self.placed.training_step if self.placed is module else self.placed
        if trainer._step_takes_idx.get("training_step", True):
            self.call_step = target
        else:
            self.call_step = lambda batch, batch_idx: target(batch)
        self.step_closure = self._step_closure
        # Resolved once per epoch so that a plain step makes no calls it does
        # not need: no context manager when the precision has none, no hook
        # loops when nobody implements the hooks, no clipping when not asked.
        self.null_context = isinstance(self.precision.forward_context(), contextlib.nullcontext)
        self.hooked_backward = bool(self.dispatch.on_before_backward or self.dispatch.on_after_backward)
        self.strategy_backward = trainer.strategy.backward
        self.no_sync = trainer.strategy.no_backward_sync if isinstance(trainer.strategy, SkipsGradientSync) else None
        # Nobody watches zero_grad (no on_before_zero_grad, no custom
        # optimizer_zero_grad): the gradients are then set to None before
        # training_step instead of after it. The weights are the same; the
        # old gradients' memory is freed before the forward allocates its
        # activations, which measured ~6 us/step faster on the benchmark MLP
        # (docs/benchmarks.md). Only training_step itself sees the difference:
        # ``p.grad`` is None there, not the last step's gradient.
        self.early_zero_grad = not self.custom_zero_grad and not self.dispatch.on_before_zero_grad
        self.plain_step = (
            not scales_gradients(self.precision)
            and not self.dispatch.on_before_optimizer_step
            and not (trainer.gradient_clip_val or trainer._clipping_overridden)
        )
        if self.plain_step:
            self.step_closure = self._closure  # nothing to do between backward and step: no wrapper call
        # The common step (one batch per step, no hook around zero_grad,
        # backward or the step, no autocast, a strategy and a precision that
        # only pass the calls on) is made without their frames: _run_direct.
        strategy = trainer.strategy
        self.direct = (
            self.accumulate == 1
            and self.plain_step
            and self.early_zero_grad
            and self.null_context
            and not self.custom_step
            and not self.hooked_backward
            and isinstance(self.precision, StepsDirectly)
            and self.precision.steps_directly
            and isinstance(strategy, StrategyBase)
            and type(strategy).backward is StrategyBase.backward
            and type(strategy).optimizer_step is StrategyBase.optimizer_step
        )
        if self.direct:
            self.run = self._run_direct  # type: ignore[method-assign]

    def run(self, batch: Any, batch_idx: int, is_last_batch: bool) -> tuple[Any, bool]:
        """Returns ``(training_step output, whether the optimizer stepped)``."""
        accumulate = self.accumulate
        self.batch = batch
        self.batch_idx = batch_idx
        if accumulate == 1:
            self.first = True
            self.window_has_grads = False
        else:
            self.first = batch_idx % accumulate == 0
            if self.first:
                self.window_has_grads = False
            if not ((batch_idx + 1) % accumulate == 0 or is_last_batch):
                try:
                    if self.no_sync is not None:
                        # Gradients are only needed in sync on the window's last batch.
                        with self.no_sync(self.placed):
                            self._closure()
                    else:
                        self._closure()
                except _SkipStep:
                    return None, False
                self.mid_window = self.window_has_grads
                return self.output, False
        try:
            if self.custom_step:
                self.module.optimizer_step(self.state.current_epoch, batch_idx, self.optimizer, self.step_closure)
            else:
                self.optimizer_step(self.optimizer, self.step_closure)
        except _SkipStep:
            self.mid_window = False
            return None, False
        self.mid_window = False
        self.state.global_step += 1
        return self.output, True

    def _run_direct(self, batch: Any, batch_idx: int, is_last_batch: bool) -> tuple[Any, bool]:
        """:meth:`run` when ``direct`` (decided once per epoch): the calls the
        strategy and precision would make (zero_grad, training_step,
        ``loss.backward()``, ``optimizer.step()``), in the same order, made
        here. An optimizer whose closure must go to ``step`` takes :meth:`run`."""
        optimizer = self.optimizer
        if not closure_may_run_first(optimizer):
            return AutomaticOptimization.run(self, batch, batch_idx, is_last_batch)
        optimizer.zero_grad()
        output = self.call_step(batch, batch_idx)
        loss = output if isinstance(output, torch.Tensor) else loss_of(output, self.module)
        if loss is None:  # training_step skipped this batch: no step
            return None, False
        try:
            loss.backward()
        except RuntimeError as exc:  # free until raised: only now is the loss looked at
            _explain_loss(exc, loss, self.module)
            raise
        optimizer.step()
        self.state.global_step += 1
        return output, True

    def _step_closure(self) -> Any:
        loss = self._closure()
        _before_step(self.trainer, self.module, self.optimizer)
        return loss

    def _closure(self) -> Any:
        trainer = self.trainer
        placed = self.placed
        if self.first and self.early_zero_grad:
            self.optimizer.zero_grad()
        if self.null_context:
            output = self.call_step(self.batch, self.batch_idx)
        else:
            with self.precision.forward_context():
                output = self.call_step(self.batch, self.batch_idx)
        loss = output if isinstance(output, torch.Tensor) else loss_of(output, self.module)
        if self.first and not self.early_zero_grad:
            hooks = self.dispatch.on_before_zero_grad
            if hooks:
                for fn in hooks:
                    fn(trainer, self.module, self.optimizer)
            if self.custom_zero_grad:
                self.module.optimizer_zero_grad(trainer.current_epoch, self.batch_idx, self.optimizer)
            else:
                self.optimizer.zero_grad()
        if loss is None:
            self.output = None
            if not self.window_has_grads:
                raise _SkipStep
            return None
        scaled = loss / self.accumulate if self.accumulate > 1 else loss
        try:
            if self.hooked_backward:
                backward(trainer, scaled)
            else:
                self.strategy_backward(scaled, placed)
        except RuntimeError as exc:  # free until raised: only now is the loss looked at
            _explain_loss(exc, loss, self.module)
            raise
        self.window_has_grads = True
        self.output = output
        return loss
