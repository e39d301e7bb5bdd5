"""Helpers user code imports, under Lightning's names:
``from lightning.pytorch.utilities import rank_zero_only`` ports to
``from ember.utilities import rank_zero_only``.

``rank_zero_only.rank`` starts from the launcher's environment (``RANK``,
``SLURM_PROCID``, ``LOCAL_RANK``, ...) and the trainer sets it to its global
rank when a run starts, so decorated functions run on process 0 only.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from ember.combined_loader import CombinedLoader
from ember.hparams import AttributeDict

__all__ = [
    "AttributeDict",
    "CombinedLoader",
    "grad_norm",
    "measure_flops",
    "move_data_to_device",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
]

log = logging.getLogger("ember")
T = TypeVar("T")


def _rank_from_env() -> int:
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                continue
    return 0


def rank_zero_only(fn: Callable[..., T], default: T | None = None) -> Callable[..., T | None]:
    """Decorator: call ``fn`` on the global-zero process only; elsewhere return ``default``."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> T | None:
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            return fn(*args, **kwargs)
        return default

    return wrapped


rank_zero_only.rank = _rank_from_env()  # type: ignore[attr-defined]


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.debug`` on the ``"ember"`` logger, on process 0 only."""
    log.debug(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.info`` on the ``"ember"`` logger, on process 0 only."""
    log.info(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_warn(message: str | Warning, stacklevel: int = 4, **kwargs: Any) -> None:
    """``warnings.warn`` on process 0 only (``category=`` is passed through)."""
    warnings.warn(message, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_deprecation(message: str | Warning, stacklevel: int = 5, **kwargs: Any) -> None:
    """A ``DeprecationWarning`` on process 0 only."""
    kwargs.setdefault("category", DeprecationWarning)
    warnings.warn(message, stacklevel=stacklevel, **kwargs)


def grad_norm(module: Any, norm_type: float | int | str, group_separator: str = "/") -> dict[str, Any]:
    """The ``norm_type``-norm of each parameter's gradient and of all of them
    together, as ``{"grad_{p}_norm{sep}{name}": tensor, "grad_{p}_norm_total": tensor}``
    (parameters without a gradient are left out). Typical use:
    ``self.log_dict(grad_norm(self, 2))`` in ``on_before_optimizer_step``."""
    import torch

    p = float(norm_type)
    if p <= 0:
        raise ValueError(f"grad_norm(norm_type={norm_type!r}) must be a positive number or 'inf'.")
    norms = {
        f"grad_{p}_norm{group_separator}{name}": torch.linalg.vector_norm(param.grad.detach(), ord=p)
        for name, param in module.named_parameters()
        if param.grad is not None
    }
    if norms:
        norms[f"grad_{p}_norm_total"] = torch.linalg.vector_norm(torch.stack(list(norms.values())), ord=p)
    return norms


def move_data_to_device(batch: Any, device: Any) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    import torch

    from ember.tensors import move_to_device

    return move_to_device(batch, torch.device(device) if isinstance(device, str) else device)


def measure_flops(model: Any, forward_fn: Callable[[], Any], loss_fn: Callable[[Any], Any] | None = None) -> int:
    """Floating-point operations of ``forward_fn()`` (and of the backward pass
    of ``loss_fn(output)`` when given), counted with ``torch.utils.flop_counter``.
    Build ``model`` on the ``"meta"`` device to count without computing."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = forward_fn()
        if loss_fn is not None:
            loss_fn(out).backward()
    return int(counter.get_total_flops())
