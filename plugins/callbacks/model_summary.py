"""``ModelSummary``: a table of the module's layers and parameter counts at the start of ``fit``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl

if TYPE_CHECKING:
    import torch

    from ember.module import Module
    from ember.trainer import Trainer


def _is_uninitialized(p: Any) -> bool:
    from torch.nn.parameter import UninitializedParameter

    return isinstance(p, UninitializedParameter)


def _count(params: Any) -> tuple[int, bool]:
    """Number of elements in ``params`` (each counted once), and whether some
    were lazy parameters whose size is not known yet."""
    seen: set[int] = set()
    total, lazy = 0, False
    for p in params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        if _is_uninitialized(p):
            lazy = True
            continue
        total += p.numel()
    return total, lazy


def human_count(n: int | float) -> str:
    """``1234567`` -> ``"1.2 M"``; counts below a thousand are written in full."""
    n = float(n)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(int(n))


def summarize(module: torch.nn.Module, max_depth: int = 1) -> str:
    """A text table of ``module``'s submodules down to ``max_depth`` levels
    (``-1``: all levels, ``0``: totals only), followed by parameter totals and
    the estimated size of the parameters in MB."""
    if max_depth < -1:
        raise ValueError(f"max_depth must be -1 or more, got {max_depth}.")
    rows: list[tuple[str, str, str, str]] = []
    if max_depth != 0:
        for name, sub in module.named_modules():
            if not name:
                continue
            depth = name.count(".") + 1
            if max_depth != -1 and depth > max_depth:
                continue
            count, lazy = _count(sub.parameters())
            shown = "?" if lazy and count == 0 else human_count(count) + ("+?" if lazy else "")
            mode = "train" if sub.training else "eval"
            rows.append((name, type(sub).__name__, shown, mode))

    seen: set[int] = set()
    trainable = frozen = 0
    size_bytes = 0
    lazy_any = False
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if _is_uninitialized(p):
            lazy_any = True
            continue
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
        size_bytes += p.numel() * p.element_size()
    total = trainable + frozen

    lines: list[str] = []
    if rows:
        header = ("", "Name", "Type", "Params", "Mode")
        table = [(str(i), *row) for i, row in enumerate(rows)]
        widths = [max(len(r[c]) for r in [header, *table]) for c in range(len(header))]
        right = {0, 3}

        def fmt(row: tuple[str, ...]) -> str:
            cells = [cell.rjust(w) if c in right else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths, strict=True))]
            return " | ".join(cells).rstrip()

        head = fmt(header)
        rule = "-" * len(head)
        lines += [rule, head, rule, *(fmt(r) for r in table), rule]
    totals = [
        (human_count(trainable), "Trainable params"),
        (human_count(frozen), "Non-trainable params"),
        (human_count(total), "Total params"),
        (f"{size_bytes / 1e6:.3f}", "Total estimated model params size (MB)"),
    ]
    width = max(len(v) for v, _ in totals)
    lines += [f"{v.ljust(width)}  {label}" for v, label in totals]
    if lazy_any:
        lines.append("Some parameters are lazy (not materialised yet); they are not counted.")
    return "\n".join(lines)


class ModelSummary(Callback):
    """Print :func:`summarize` of the module when ``fit`` starts, on global zero.

    :param max_depth: how many levels of submodules to list; ``-1`` lists all,
        ``0`` turns the summary off.
    """

    fills = "model_summary"

    def __init__(self, max_depth: int = 1) -> None:
        if max_depth < -1:
            raise ValueError(f"ModelSummary(max_depth={max_depth}): use -1 (all levels), 0 (off) or a positive depth.")
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if self.max_depth == 0 or not trainer.is_global_zero:
            return
        print(summarize(module, self.max_depth), flush=True)


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "model_summary", ModelSummary)
