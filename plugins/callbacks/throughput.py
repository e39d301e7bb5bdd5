"""``ThroughputMonitor``: training speed in batches, samples and items per second.

Every training batch adds to running counts (the batch size, and the items
``items_fn`` reports, e.g. tokens) and appends a ``time.perf_counter``
timestamp to a window of the last ``window`` batches; nothing is converted
or formatted per step. Every ``trainer.log_every_n_steps`` optimizer steps the
rates over the window are sent to the loggers with ``trainer.log_metrics``:

``throughput/batches_per_sec``, ``throughput/samples_per_sec`` and, when
``items_fn`` is given, ``throughput/{item_name}_per_sec``.

Time spent validating inside ``fit`` is left out of the window, so the rates
are those of training. The rates are this process's; with several processes
multiply by ``trainer.world_size`` for the whole job.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.results import extract_batch_size

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


def infer_batch_size(batch: Any) -> int:
    """The samples in ``batch``: the answer ``self.log`` uses
    (:func:`ember.results.extract_batch_size`, the first dimension of the first
    non-empty tensor), else the length of a sized batch, else 1. Reads shapes
    only: no device sync."""
    size = extract_batch_size(batch)
    if size:
        return size
    return len(batch) if hasattr(batch, "__len__") and not isinstance(batch, (str, bytes)) else 1


class ThroughputMonitor(Callback):
    """Log training throughput.

    :param batch_size_fn: ``batch -> int``: samples in a batch (default: the
        first dimension of the first tensor in it).
    :param items_fn: ``batch -> int | tensor``: items in a batch, e.g. tokens
        (``lambda b: b["attention_mask"].sum()``) or images. A tensor is added
        up as a tensor and read only when a rate is logged.
    :param item_name: what ``items_fn`` counts; names ``throughput/{item_name}_per_sec``.
        With ``item_name="samples"`` ``items_fn`` counts the samples instead of ``batch_size_fn``.
    :param window: how many recent batches the rates are averaged over.
    :param length_fn: Lightning's name for ``items_fn``; its rate is
        ``throughput/items_per_sec`` unless ``item_name`` says otherwise.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int] | None = None,
        items_fn: Callable[[Any], Any] | None = None,
        item_name: str = "samples",
        window: int = 50,
        length_fn: Callable[[Any], Any] | None = None,
    ) -> None:
        if length_fn is not None:
            # Lightning's name for items_fn: the items (e.g. tokens) of a batch, logged as items_per_sec.
            if items_fn is not None:
                raise ValueError("ThroughputMonitor: length_fn is Lightning's name for items_fn; pass one of them.")
            items_fn, item_name = length_fn, ("items" if item_name == "samples" else item_name)
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"ThroughputMonitor(window={window!r}) must be a positive int.")
        if not item_name or "/" in item_name:
            raise ValueError(f"ThroughputMonitor(item_name={item_name!r}) must be a non-empty name without '/'.")
        if item_name == "samples" and items_fn is not None:
            if batch_size_fn is not None:
                raise ValueError("ThroughputMonitor: items_fn with item_name='samples' counts samples; pass batch_size_fn or items_fn, not both.")
            batch_size_fn, items_fn = items_fn, None
        self.batch_size_fn = batch_size_fn or infer_batch_size
        self.items_fn = items_fn
        self.item_name = item_name
        self.window = window
        #: Every value logged, as (step, {name: value}) pairs.
        self.history: list[tuple[int, dict[str, float]]] = []
        self._reset()

    def _reset(self) -> None:
        self._batches = 0
        self._samples: Any = 0
        self._items: Any = 0
        self._marks: deque[tuple[float, int, Any, Any]] = deque(maxlen=self.window + 1)
        self._paused_at: float | None = None
        self._paused_total = 0.0
        self._last_logged_step = -1
        self._warned = False

    def _now(self) -> float:
        return time.perf_counter() - self._paused_total

    # ------------------------------------------------------------------ counting
    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        self._reset()
        if not trainer.loggers and not self._warned:
            self._warned = True
            warnings.warn("ThroughputMonitor: the Trainer has no logger, so the rates are kept in .history only.", stacklevel=2)

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if not self._marks:
            self._marks.append((self._now(), 0, 0, 0))

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batches += 1
        self._samples += self.batch_size_fn(batch)
        if self.items_fn is not None:
            self._items = self._items + self.items_fn(batch)
        self._marks.append((self._now(), self._batches, self._samples, self._items))
        step = trainer.global_step
        if step != self._last_logged_step and step % trainer.log_every_n_steps == 0:
            self._last_logged_step = step
            self._log(trainer, step)

    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        if trainer.state.fn == "fit":
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        if self._paused_at is not None:
            self._paused_total += time.perf_counter() - self._paused_at
            self._paused_at = None

    # ------------------------------------------------------------------ logging
    def rates(self) -> dict[str, float]:
        """The current rates over the window (empty before two marks exist)."""
        if len(self._marks) < 2:
            return {}
        t0, b0, s0, i0 = self._marks[0]
        t1, b1, s1, i1 = self._marks[-1]
        elapsed = t1 - t0
        if elapsed <= 0:
            return {}
        out = {
            "throughput/batches_per_sec": (b1 - b0) / elapsed,
            "throughput/samples_per_sec": float(s1 - s0) / elapsed,
        }
        if self.items_fn is not None:
            out[f"throughput/{self.item_name}_per_sec"] = float(i1 - i0) / elapsed
        return out

    def _log(self, trainer: Trainer, step: int) -> None:
        metrics = self.rates()
        if not metrics:
            return
        self.history.append((step, metrics))
        trainer.log_metrics(metrics, step=step)


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "throughput_monitor", ThroughputMonitor)
