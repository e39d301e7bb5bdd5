"""``SpikeDetection``: stop training at a loss spike and record the batch, so
a rerun can skip it."""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ember.callback import Callback

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


class TrainingSpikeException(RuntimeError):
    """The loss of a training batch spiked; ``batch_idx`` names it."""

    def __init__(self, batch_idx: int, *args: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args)
        self.batch_idx = batch_idx


class SpikeDetection(Callback):
    """Watch the training loss: once ``warmup`` losses are seen, a loss that is
    worse than the mean of the last ``window`` by more than ``atol + rtol *
    |mean|`` (``mode="min"``: higher; ``"max"``: lower), or not finite when
    ``finite_only`` is false, is a spike. The batch index is appended to the
    JSON list ``exclude_batches_path`` (default
    ``default_root_dir/skip_batches.json``) and :class:`TrainingSpikeException` is raised.
    With ``finite_only=True`` (the default) non-finite losses are ignored."""

    def __init__(
        self,
        mode: str = "min",
        window: int = 10,
        warmup: int = 1,
        atol: float | None = None,
        rtol: float | None = 2.0,
        exclude_batches_path: str | os.PathLike[str] | None = None,
        finite_only: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"SpikeDetection(mode={mode!r}) must be 'min' or 'max'.")
        if window < 1 or warmup < 0:
            raise ValueError(f"SpikeDetection(window={window}, warmup={warmup}): window >= 1 and warmup >= 0.")
        if atol is None and rtol is None:
            raise ValueError("SpikeDetection needs atol or rtol (or both).")
        self.mode, self.window, self.warmup = mode, window, warmup
        self.atol, self.rtol = atol, rtol
        self.exclude_batches_path = os.fspath(exclude_batches_path) if exclude_batches_path is not None else None
        self.finite_only = finite_only
        self.running: deque[float] = deque(maxlen=window)
        self.bad_batches: list[int] = []
        self._seen = 0

    def _is_spike(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return not self.finite_only
        if self._seen < self.warmup or not self.running:
            return False
        mean = sum(self.running) / len(self.running)
        worse = loss - mean if self.mode == "min" else mean - loss
        return worse > (self.atol or 0.0) + (self.rtol or 0.0) * abs(mean)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if isinstance(outputs, torch.Tensor):
            loss = outputs
        elif isinstance(outputs, Mapping) and "loss" in outputs:
            loss = outputs["loss"]
        else:
            raise TypeError(f"SpikeDetection needs training_step to return the loss (a tensor or a dict with 'loss'); got {type(outputs).__name__}.")
        value = float(loss.detach())
        if trainer.world_size > 1:
            value = float(trainer.strategy.reduce(loss.detach().reshape(()).float(), "mean"))
        if self._is_spike(value):
            self.bad_batches.append(batch_idx)
            if trainer.is_global_zero:
                path = self.exclude_batches_path or os.path.join(trainer.default_root_dir, "skip_batches.json")
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(self.bad_batches, f)
            raise TrainingSpikeException(batch_idx)
        if math.isfinite(value):
            self.running.append(value)
            self._seen += 1
