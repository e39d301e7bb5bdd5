"""What ``self.log`` records during one loop.

Per step: no device synchronisation, no string formatting. A step value is
stored as given and detached (a number made a tensor) when something first
reads it. A value kept for the epoch is taken when logged (a Python number on
the CPU, a graph-free tensor elsewhere) into a list folded every few hundred
entries and reduced when the epoch ends. Step values become Python floats
only when a logger or the progress bar reads them.
``benchmarks/log_calls.py`` measures what this costs per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ember import metric_logging

_FOLD_EVERY = 256
_REDUCE_NAMES = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_REDUCE_FNS: dict[Any, str] = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min", sum: "sum", max: "max", min: "min"}


def extract_batch_size(batch: Any) -> int:
    """Size of the first dimension of the first tensor found in ``batch``."""
    if type(batch) is tuple or type(batch) is list:  # the common (x, y) batch: no recursion, no torch.Size
        first = batch[0] if batch else None
        if type(first) is torch.Tensor:
            shape = first.shape  # a property read: cheaper than dim() and size(0), two parsed calls
            if shape and shape[0]:
                return shape[0]
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else 1
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = extract_batch_size(item)
            if size:
                return size
    elif isinstance(batch, dict):
        for item in batch.values():
            size = extract_batch_size(item)
            if size:
                return size
    return 0


class _Entry:
    __slots__ = (
        "name",
        "on_step",
        "on_epoch",
        "prog_bar",
        "logger",
        "reduce",
        "sync_dist",
        "last",
        "fresh",
        "values",
        "weights",
        "folded",
        "folded_weight",
        "metric",
        "keep_graph",
        "double",
    )

    def __init__(self, name: str, on_step: bool, on_epoch: bool, prog_bar: bool, logger: bool, reduce: str, sync_dist: bool) -> None:
        self.name = name
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.prog_bar = prog_bar
        self.logger = logger
        self.reduce = reduce
        self.sync_dist = sync_dist
        self.last: Any = None
        self.fresh = False
        self.values: list[Any] = []
        self.weights: list[int] = []
        self.folded: torch.Tensor | None = None
        self.folded_weight = 0
        self.metric: Any = None  # a torchmetrics Metric (see ember.metric_logging)
        self.keep_graph = False  # logged with enable_graph=True: readers get the tensor with its graph
        self.double = False  # first logged as a float64 tensor: the epoch value is reduced in float64

    def step_value(self) -> Any:
        """The last value as readers get it: a tensor, detached unless logged
        with ``enable_graph=True``. ``Results.log`` stores step values as given
        (a Python number, or a tensor with its graph) because most are never
        read; the conversion happens here, once, on the first read."""
        value = self.last
        if isinstance(value, torch.Tensor):
            if value.requires_grad and not self.keep_graph:
                value = self.last = value.detach()
        elif isinstance(value, (int, float)):
            value = self.last = torch.tensor(float(value))
        return value

    def fold(self) -> None:
        """Reduce the waiting values into ``folded``. Called when
        ``_FOLD_EVERY`` values wait and when the epoch ends, never because
        something read or saved the running value: the epoch value is then the
        same, bit for bit, whoever read it and whether the run resumed."""
        if self.values:
            self.folded, self.folded_weight = self._folded_with_values()
            self.values.clear()
            self.weights.clear()

    def _folded_with_values(self) -> tuple[torch.Tensor | None, int]:
        """``(folded, folded_weight)`` with the waiting values reduced in; changes nothing."""
        if not self.values:
            return self.folded, self.folded_weight
        dtype = torch.float64 if self.double else torch.float32
        if any(isinstance(v, torch.Tensor) for v in self.values):
            values = torch.stack([v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=dtype) for v in self.values]).to(dtype)
        else:  # numbers only (CPU values are kept as numbers): one tensor, as stacking them would give
            values = torch.tensor(self.values, dtype=torch.float64 if self.double else None).to(dtype)
        weight = self.folded_weight
        if self.reduce == "mean":
            weights = self.weights
            if weights.count(weights[0]) == len(weights):  # one batch size throughout: no weight tensor to build
                part = (values * weights[0]).sum(0)
            else:
                w = torch.tensor(weights, dtype=values.dtype, device=values.device)
                part = (values * w.view(-1, *([1] * (values.ndim - 1)))).sum(0)
            weight += sum(weights)
        elif self.reduce == "sum":
            part = values.sum(0)
        elif self.reduce == "max":
            part = values.max(0).values
        else:
            part = values.min(0).values
        if self.folded is None:
            return part, weight
        if self.reduce in ("mean", "sum"):
            return self.folded + part, weight
        if self.reduce == "max":
            return torch.maximum(self.folded, part), weight
        return torch.minimum(self.folded, part), weight

    def epoch_value(self, reduce_across: Callable[[torch.Tensor, str], torch.Tensor] | None, final: bool = True) -> torch.Tensor | None:
        """The epoch's reduced value; ``final=False`` reads the value so far
        without folding (a read in the middle of the epoch changes nothing)."""
        if self.metric is not None:
            return metric_logging.epoch_value(self)
        if final:
            self.fold()
        value, weight = self._folded_with_values()
        if value is None:
            return None
        if self.reduce == "mean":
            if reduce_across is not None and self.sync_dist:
                total = reduce_across(
                    torch.stack(
                        [
                            value.sum() if value.ndim else value,
                            torch.tensor(float(weight), dtype=value.dtype, device=value.device),
                        ]
                    ),
                    "sum",
                )
                return total[0] / total[1]
            return value / max(weight, 1)
        if reduce_across is not None and self.sync_dist:
            return reduce_across(value, self.reduce)
        return value


class Results:
    """Everything logged in one loop (one training epoch, one evaluation run)."""

    def __init__(self, default_on_step: bool, default_on_epoch: bool) -> None:
        self.entries: dict[str, _Entry] = {}
        self.default_on_step = default_on_step
        self.default_on_epoch = default_on_epoch
        self.dataloader_suffix = ""  # "/dataloader_idx_N" when there are several eval dataloaders
        self.batch: Any = None
        self._batch_size: int | None = None
        self.epoch_values: dict[str, torch.Tensor] = {}

    def new_batch(self, batch: Any) -> None:
        self.batch = batch
        self._batch_size = None

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool,
        logger: bool | None,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: Any,
        enable_graph: bool,
        sync_dist: bool,
        add_dataloader_idx: bool,
        batch_size: int | None,
    ) -> None:
        key = name + self.dataloader_suffix if add_dataloader_idx and self.dataloader_suffix else name
        entry = self.entries.get(key)
        if entry is None:
            entry = self._create(key, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist)
        # The hot path: no device sync, no conversion, no tensor made for a step-only value.
        # The step value is kept as given and detached (a number: made a tensor)
        # by _Entry.step_value when something reads it, which most never are.
        # A value kept for the epoch waits (with up to _FOLD_EVERY others)
        # without its graph, taken now: on the CPU as a Python number (no sync;
        # kept tensors held their storage and slowed the next backward pass,
        # docs/benchmarks.md); elsewhere, with a graph (a fresh result such as
        # the loss) as ``.data`` (detach() without its dispatcher call), without
        # one as a copy (it may be a running total updated in place).
        kept = value
        if isinstance(value, torch.Tensor):
            entry.keep_graph = enable_graph
            if entry.on_epoch and not enable_graph:
                if value.is_cpu:
                    kept = value.tolist()
                elif value.requires_grad:
                    kept = value.data
                else:
                    kept = value.clone()
        elif isinstance(value, (int, float)):
            kept = value = float(value)  # callback_metrics promise tensors: step_value() converts
        else:
            items = metric_logging.collection_items(value)
            if items is not None:
                del self.entries[key]
                for item_name, metric in items:
                    self.log(
                        item_name, metric, prog_bar, logger, on_step, on_epoch, reduce_fx,
                        enable_graph, sync_dist, add_dataloader_idx, batch_size,
                    )  # fmt: skip
                return
            if metric_logging.log_object(self, key, entry, value):
                return
            raise TypeError(
                f"self.log({name!r}, ...) got a {type(value).__name__}; log a number, a scalar tensor or a torchmetrics Metric."
            )
        entry.last = value
        entry.fresh = True
        if entry.on_epoch:
            entry.values.append(kept)
            if entry.reduce == "mean":
                if batch_size is None:
                    batch_size = self._batch_size
                    if batch_size is None:
                        batch_size = self._batch_size = extract_batch_size(self.batch) or 1
                entry.weights.append(batch_size)
            if len(entry.values) >= _FOLD_EVERY:
                entry.fold()

    def _create(
        self,
        key: str,
        value: Any,
        prog_bar: bool,
        logger: bool | None,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: Any,
        sync_dist: bool,
    ) -> _Entry:
        if isinstance(reduce_fx, str):
            reduce = _REDUCE_NAMES.get(reduce_fx.lower())
        else:
            reduce = _REDUCE_FNS.get(reduce_fx)
        if reduce is None:
            raise ValueError(f"self.log({key!r}, reduce_fx={reduce_fx!r}): use 'mean', 'sum', 'max' or 'min'.")
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise ValueError(f"self.log({key!r}, ...) got a tensor of shape {tuple(value.shape)}; log a scalar.")
        entry = _Entry(
            key,
            self.default_on_step if on_step is None else on_step,
            self.default_on_epoch if on_epoch is None else on_epoch,
            prog_bar,
            True if logger is None else logger,
            reduce,
            sync_dist,
        )
        entry.double = isinstance(value, torch.Tensor) and value.dtype == torch.float64
        self.entries[key] = entry
        return entry

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _step_name(entry: _Entry) -> str:
        return forked(entry.name, "_step") if entry.on_epoch else entry.name

    def step_values(self, only_fresh: bool = True, for_logger: bool = True) -> dict[str, Any]:
        """Step-level values logged since the last call (they are then no longer fresh)."""
        out = {}
        for entry in self.entries.values():
            if entry.on_step and (entry.fresh or not only_fresh) and (entry.logger or not for_logger):
                out[self._step_name(entry)] = entry.step_value()
                if only_fresh:
                    entry.fresh = False
        return out

    def live_metrics(self) -> dict[str, Any]:
        """Latest values, as callbacks see them during the loop: step values,
        and the epoch aggregates so far (computed here, on request only)."""
        out: dict[str, Any] = dict(self.epoch_values)
        for entry in self.entries.values():
            if entry.on_epoch and entry.name not in self.epoch_values and entry.metric is None:
                value = entry.epoch_value(None, final=False)
                if value is not None:
                    out[forked(entry.name, "_epoch") if entry.on_step else entry.name] = value
            if entry.on_step and entry.last is not None:
                last = entry.step_value()
                if entry.name not in self.epoch_values:  # after the epoch, the plain name is the epoch value
                    out[entry.name] = last
                if entry.on_epoch:
                    out[forked(entry.name, "_step")] = last
        return out

    def progress_bar_metrics(self) -> dict[str, Any]:
        out = {}
        for entry in self.entries.values():
            if not entry.prog_bar:
                continue
            if entry.on_step and entry.last is not None:
                out[entry.name] = entry.step_value()
            elif entry.name in self.epoch_values:
                out[entry.name] = self.epoch_values[entry.name]
        return out

    def state_dict(self, module: torch.nn.Module | None = None) -> dict[str, Any]:
        """The epoch so far, for exact resume (tensors, numbers and strings only).
        Logged torchmetrics objects are found in ``module`` to save their state."""
        entries = {}
        for key, entry in self.entries.items():
            if entry.metric is not None:
                saved_metric = metric_logging.save_state(entry, module)
                if saved_metric is not None:
                    options = [entry.on_step, entry.on_epoch, entry.prog_bar, entry.logger, entry.reduce, entry.sync_dist]
                    entries[key] = {"name": entry.name, "options": options, "last": entry.last, "metric": saved_metric}
                continue
            entries[key] = {
                "name": entry.name,
                "options": [entry.on_step, entry.on_epoch, entry.prog_bar, entry.logger, entry.reduce, entry.sync_dist],
                "last": entry.step_value(),
                "folded": entry.folded,
                "folded_weight": entry.folded_weight,
                # Not folded here: the resumed run folds at the same counts as an uninterrupted one.
                "values": list(entry.values),  # numbers, and tensors from other devices
                "weights": list(entry.weights),
                "double": entry.double,
            }
        return {"entries": entries}

    def load_state_dict(self, state: dict[str, Any], module: torch.nn.Module | None = None) -> None:
        for key, saved in state.get("entries", {}).items():
            entry = _Entry(saved["name"], *saved["options"])
            entry.last = saved["last"]
            if "metric" in saved:
                metric_logging.restore_state(entry, saved["metric"], module)
                self.entries[key] = entry
                continue
            entry.folded = saved["folded"]
            entry.folded_weight = saved["folded_weight"]
            entry.values, entry.weights = list(saved.get("values", ())), list(saved.get("weights", ()))  # absent before ember 0.2
            folded = entry.folded
            entry.double = saved.get("double", isinstance(folded, torch.Tensor) and folded.dtype == torch.float64)
            self.entries[key] = entry

    def finalize_epoch(
        self, reduce_across: Callable[[torch.Tensor, str], torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Reduce the epoch-level values. Returns ``(callback_metrics,
        logger_metrics)``; callback metrics carry both ``name`` and, for
        metrics logged per step too, ``name_epoch``."""
        callback: dict[str, torch.Tensor] = {}
        logged: dict[str, torch.Tensor] = {}
        for entry in self.entries.values():
            if not entry.on_epoch:
                continue
            value = entry.epoch_value(reduce_across)
            if value is None:
                continue
            callback[entry.name] = value
            name = forked(entry.name, "_epoch") if entry.on_step else entry.name
            callback[name] = value
            if entry.logger:
                logged[name] = value
        self.epoch_values = callback
        metric_logging.reset_all(self)
        return callback, logged


def forked(name: str, tag: str) -> str:
    """``name`` with ``_step``/``_epoch``, placed before a ``/dataloader_idx_N``
    suffix as Lightning does (``loss_epoch/dataloader_idx_0``)."""
    base, sep, index = name.rpartition("/dataloader_idx_")
    return f"{base}{tag}{sep}{index}" if sep else name + tag


def to_float(value: Any) -> float:
    return value.item() if isinstance(value, torch.Tensor) else float(value)
