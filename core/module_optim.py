"""The optimization half of :class:`ember.Module`, kept out of ``module.py``:
the optimizers and schedulers of the run, backward, gradient clipping,
optimizer and scheduler steps (the methods a module overrides to change how
it is optimized), toggling optimizers for multi-optimizer training, and
freezing.

The training loop calls these through the module once per step, as methods
of the module's class; they are defined here only to keep ``module.py``
small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch


class ModuleOptimizationMixin:
    """Mixed into :class:`ember.Module` (``self.trainer`` is the module's trainer)."""

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizers from ``configure_optimizers`` (one, or a list). In
        manual optimization their ``step()`` also advances ``global_step``."""
        opts = self.trainer._optimizer_handles
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self) -> Any:
        """The LR schedulers (one, a list, or ``None``)."""
        schedulers = [c.scheduler for c in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Back-propagate ``loss`` through the precision plugin, with the
        backward hooks; use it instead of ``loss.backward()`` in manual
        optimization."""
        self.trainer._backward(loss)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)

    def clip_gradients(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip the gradients of ``optimizer``'s parameters by norm (default) or value."""
        if not gradient_clip_val:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        algorithm = gradient_clip_algorithm or "norm"
        if algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        elif algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', not {algorithm!r}.")

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Override to clip differently; the default clips as the Trainer arguments say."""
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any] | None = None) -> None:
        """Override to change how the optimizer steps (e.g. LR warm-up); call
        ``optimizer.step(closure=optimizer_closure)``."""
        optimizer.step(closure=optimizer_closure)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Let only ``optimizer``'s parameters require gradients (for GANs and
        other multi-optimizer training): every other parameter that an optimizer
        of this run holds is set to ``requires_grad=False`` until
        :meth:`untoggle_optimizer`. Parameters you froze yourself stay frozen."""
        saved: dict[torch.Tensor, bool] = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for param in group["params"]:
                    if param not in saved:
                        saved[param] = param.requires_grad
                        param.requires_grad = False
        for group in _unwrap_optimizer(optimizer).param_groups:
            for param in group["params"]:
                param.requires_grad = saved.get(param, param.requires_grad)
        object.__setattr__(self, "_toggled_requires_grad", saved)

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Undo :meth:`toggle_optimizer`: the other optimizers' parameters get
        back the ``requires_grad`` they had before."""
        saved: dict[torch.Tensor, bool] = getattr(self, "_toggled_requires_grad", None) or {}
        target = _unwrap_optimizer(optimizer)
        for opt in self.trainer.optimizers:
            if opt is target:
                continue
            for group in opt.param_groups:
                for param in group["params"]:
                    if param in saved:
                        param.requires_grad = saved[param]
        object.__setattr__(self, "_toggled_requires_grad", {})

    @contextlib.contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Iterator[None]:
        """:meth:`toggle_optimizer` for the duration of a ``with`` block."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Override for schedulers with a non-standard ``step``."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = True
        self.train()


def _unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer behind what ``self.optimizers()`` returned."""
    return getattr(optimizer, "optimizer", optimizer)
