"""The collectives of ``ddp`` (and of ``fsdp`` and ``deepspeed``, which derive
from it) over ``torch.distributed``: ``reduce``, ``all_gather``,
``all_gather_object``, ``broadcast``, ``barrier`` and ``no_backward_sync``.

With no process group of more than one process each is the one-process
answer. Once this rank failed (``strategy.failed``, see
:mod:`ember.plugins.strategies.rank_failure`) a collective raises at once
instead of waiting for peers that will not come.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist

from ember.plugins.strategies.rank_failure import skipped

_REDUCE_OPS = {"sum": "SUM", "mean": "SUM", "avg": "SUM", "max": "MAX", "min": "MIN"}


class DDPCollectives:
    """Mixed into :class:`~ember.plugins.strategies.ddp.DDPStrategy`; uses its
    ``root_device``, ``failed``, ``global_rank`` and ``world_size``."""

    failed: BaseException | None = None

    def _group_ready(self, what: str = "a collective") -> bool:
        """Whether collectives run (a group of more than one). Raises once this rank failed."""
        ready = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if ready and self.failed is not None:
            raise skipped(self.global_rank, self.world_size, what, self.failed)
        return ready

    def reduce(self, tensor: Any, op: str = "mean") -> Any:
        if not self._group_ready():
            return tensor
        name = str(op).lower()
        if name not in _REDUCE_OPS:
            raise ValueError(f"reduce(op={op!r}): use 'mean', 'sum', 'max' or 'min'.")
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.tensor(tensor)
        out = tensor.detach().clone()
        if name in ("mean", "avg") and not out.is_floating_point():
            out = out.double() if out.dtype == torch.int64 else out.float()
        on = out.to(self.root_device) if out.device != self.root_device else out
        dist.all_reduce(on, op=getattr(dist.ReduceOp, _REDUCE_OPS[name]))
        if name in ("mean", "avg"):
            on = on / dist.get_world_size()
        return on.to(tensor.device) if on.device != tensor.device else on

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self._group_ready():
            return super().all_gather(tensor)
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.tensor(tensor)
        source = tensor.detach().contiguous().to(self.root_device)
        gathered = [torch.empty_like(source) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, source)
        return torch.stack(gathered).to(tensor.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order (checkpoints use it for per-rank RNG state)."""
        if not self._group_ready():
            return [obj]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered

    def no_backward_sync(self, module: torch.nn.Module) -> Any:
        """Skip the gradient all-reduce for backward passes inside the context:
        the kernel uses it for the batches of an accumulation window before the last."""
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            return module.no_sync()
        return contextlib.nullcontext()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self._group_ready():
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self.root_device if self.root_device.type == "cuda" else None)
        return box[0]

    def barrier(self, name: str | None = None) -> None:
        if not self._group_ready(f"barrier {name!r}" if name else "a barrier"):
            return
        if self.root_device.type == "cuda" and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()
