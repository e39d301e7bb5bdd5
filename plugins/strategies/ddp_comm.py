"""DDP communication hooks and post-local-SGD model averaging for
:class:`~ember.plugins.strategies.ddp.DDPStrategy` (Lightning's keywords).

- ``ddp_comm_hook``: a ``torch.distributed`` communication hook (for example
  ``default_hooks.fp16_compress_hook`` or ``powerSGD_hook.powerSGD_hook``),
  registered with ``DistributedDataParallel.register_comm_hook`` once the
  module is wrapped. It then runs instead of the plain all-reduce of each
  gradient bucket.
- ``ddp_comm_state``: the hook's state (``None`` means the process group,
  as torch's default hooks expect; ``PowerSGDState`` / ``PostLocalSGDState``
  for theirs).
- ``ddp_comm_wrapper``: a hook wrapper (``default_hooks.fp16_compress_wrapper``,
  ``bf16_compress_wrapper``); the registered hook is ``ddp_comm_wrapper(ddp_comm_hook)``.
- ``model_averaging_period`` (with ``ddp_comm_state`` a ``PostLocalSGDState``
  and ``ddp_comm_hook`` ``post_localSGD_hook``): after
  ``start_localSGD_iter`` steps gradients stop being all-reduced, and the
  optimizer is wrapped in ``torch.distributed.optim.PostLocalSGDOptimizer``,
  which averages the parameters of all processes every
  ``model_averaging_period`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def check_comm_options(hook: Callable[..., Any] | None, state: Any, wrapper: Callable[..., Any] | None, period: int | None) -> None:
    if hook is None and (state is not None or wrapper is not None):
        raise ValueError("DDPStrategy: ddp_comm_state / ddp_comm_wrapper apply to a ddp_comm_hook; pass ddp_comm_hook=... as well.")
    if period is not None:
        if int(period) < 1:
            raise ValueError(f"DDPStrategy(model_averaging_period={period!r}): give a number of steps >= 1.")
        from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import PostLocalSGDState

        if not isinstance(state, PostLocalSGDState):
            raise ValueError(
                "DDPStrategy(model_averaging_period=...) needs ddp_comm_state=PostLocalSGDState(...) and "
                "ddp_comm_hook=post_localSGD_hook (torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook)."
            )


def register_comm_hook(
    wrapped: torch.nn.parallel.DistributedDataParallel,
    hook: Callable[..., Any] | None,
    state: Any,
    wrapper: Callable[..., Any] | None,
    processes_per_node: int,
) -> None:
    """Register ``wrapper(hook)`` (or ``hook``) with ``state`` on the DDP module.

    A ``PostLocalSGDState`` without a ``subgroup`` gets one group per node (what
    torch makes by default from the CUDA device count; here from the processes
    per node, so that it works on CPU too)."""
    if hook is None:
        return
    if type(state).__name__ == "PostLocalSGDState" and state.subgroup is None and not torch.cuda.is_available():
        import torch.distributed as dist

        state.subgroup, _ = dist.new_subgroups(group_size=processes_per_node)
    if wrapper is not None:
        hook = wrapper(hook)
    wrapped.register_comm_hook(state=state, hook=hook)


def averaging_optimizers(optimizers: list[torch.optim.Optimizer], state: Any, period: int | None) -> list[torch.optim.Optimizer]:
    """With ``model_averaging_period``: each optimizer in a ``PostLocalSGDOptimizer``
    that averages parameters every ``period`` steps once local SGD started."""
    if period is None:
        return optimizers
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
    from torch.distributed.optim import PostLocalSGDOptimizer

    class AveragingOptimizer(PostLocalSGDOptimizer):
        """``PostLocalSGDOptimizer`` whose ``step`` takes the closure ember's precision plugins pass."""

        def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
            loss = self.optim.step(closure) if closure is not None else self.optim.step()
            self.averager.average_parameters(params=self.param_groups)
            return loss

    return [
        AveragingOptimizer(optim=opt, averager=PeriodicModelAverager(period=int(period), warmup_steps=state.start_localSGD_iter))
        for opt in optimizers
    ]
