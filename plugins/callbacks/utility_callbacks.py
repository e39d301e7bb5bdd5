"""Small callbacks with Lightning's names and arguments: ``LambdaCallback``,
``OnExceptionCheckpoint``, ``Timer``, ``BasePredictionWriter`` and
``GradientAccumulationScheduler``. None has per-step work unless its job is per step."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ember.callback import Callback

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

_HOOKS = tuple(
    name for name in vars(Callback) if name.startswith("on_") or name in ("setup", "teardown")
)


class LambdaCallback(Callback):
    """A callback made of functions: ``LambdaCallback(on_train_epoch_end=fn)``.
    Each keyword is a hook name; the function gets the hook's arguments."""

    def __new__(cls, **hooks: Callable[..., Any] | None) -> LambdaCallback:
        unknown = sorted(set(hooks) - set(_HOOKS))
        if unknown:
            from ember.suggest import did_you_mean

            raise TypeError(f"LambdaCallback got unknown hook(s) {unknown}.{did_you_mean(unknown[0], _HOOKS)}")
        # A class of its own per instance: ember registers the hooks a class
        # overrides, so only the given functions cost anything.
        methods = {name: _as_method(fn) for name, fn in hooks.items() if fn is not None}
        sub = type(cls.__name__, (cls,), methods)
        return super().__new__(sub)

    def __init__(self, **hooks: Callable[..., Any] | None) -> None:
        self.hooks = {k: v for k, v in hooks.items() if v is not None}

    def __reduce__(self) -> Any:
        return (_rebuild_lambda, (self.hooks,))


# Name every hook as a keyword in the signature (for introspection and IDEs).
LambdaCallback.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in _HOOKS]
)


def _rebuild_lambda(hooks: dict[str, Any]) -> LambdaCallback:
    return LambdaCallback(**hooks)


def _as_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Any, *args: Any) -> Any:
        return fn(*args)

    return method


class OnExceptionCheckpoint(Callback):
    """Save a checkpoint to ``dirpath/filename.ckpt`` when fit fails or is interrupted."""

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "on_exception") -> None:
        self.dirpath = os.fspath(dirpath)
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        if trainer.state.fn == "fit":
            trainer.save_checkpoint(self.ckpt_path)


class Timer(Callback):
    """Stop training once ``duration`` has passed (checked after every step,
    or every epoch with ``interval="epoch"``), and time each stage.

    :param duration: ``"DD:HH:MM:SS"``, a ``timedelta`` or a dict of timedelta
        arguments; ``None`` only measures.
    :param verbose: print when the time is up.
    """

    def __init__(self, duration: Any = None, interval: str = "step", verbose: bool = True) -> None:
        from ember.trainer_args import parse_max_time

        if interval not in ("step", "epoch"):
            raise ValueError(f"Timer(interval={interval!r}) must be 'step' or 'epoch'.")
        self._duration = parse_max_time(duration) if duration is not None else None
        self._interval = interval
        self._verbose = verbose
        self._start: dict[str, float | None] = {}
        self._end: dict[str, float | None] = {}
        self._offset = 0.0  # training time before a resume

    def start_time(self, stage: str = "train") -> float | None:
        return self._start.get(stage)

    def end_time(self, stage: str = "train") -> float | None:
        return self._end.get(stage)

    def time_elapsed(self, stage: str = "train") -> float:
        start, end = self._start.get(stage), self._end.get(stage)
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + ((end if end is not None else time.monotonic()) - start)

    def time_remaining(self, stage: str = "train") -> float | None:
        return None if self._duration is None else self._duration - self.time_elapsed(stage)

    def _begin(self, stage: str) -> None:
        self._start[stage], self._end[stage] = time.monotonic(), None

    def _finish(self, stage: str) -> None:
        self._end[stage] = time.monotonic()

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        self._begin("train")

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        self._finish("train")

    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        self._begin("validate")

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        self._finish("validate")

    def on_test_start(self, trainer: Trainer, module: Module) -> None:
        self._begin("test")

    def on_test_end(self, trainer: Trainer, module: Module) -> None:
        self._finish("test")

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._interval == "step" and self._duration is not None:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if self._interval == "epoch" and self._duration is not None:
            self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if self.time_elapsed("train") >= self._duration:  # type: ignore[operator]
            trainer.should_stop = True
            if self._verbose and trainer.is_global_zero:
                print(f"Timer: time limit of {self._duration:.0f}s reached; stopping training.", flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {"train": self.time_elapsed("train")}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = float(state_dict.get("time_elapsed", {}).get("train", 0.0))


class BasePredictionWriter(Callback):
    """Base for writing predictions as they are made: override
    :meth:`write_on_batch_end` and/or :meth:`write_on_epoch_end`.

    :param write_interval: ``"batch"``, ``"epoch"`` or ``"batch_and_epoch"``.
    ``batch_indices`` are the dataset indices of the batch's samples when the
    predict loader uses a plain sampler, else ``None``.
    """

    def __init__(self, write_interval: str = "batch") -> None:
        if write_interval not in ("batch", "epoch", "batch_and_epoch"):
            raise ValueError(f"BasePredictionWriter(write_interval={write_interval!r}) must be 'batch', 'epoch' or 'batch_and_epoch'.")
        self.interval = write_interval
        self._predictions: list[list[Any]] = []
        self._indices: list[list[Any]] = []
        self._orders: dict[int, list[list[int]]] = {}

    def write_on_batch_end(
        self, trainer: Trainer, module: Module, prediction: Any, batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None:
        raise NotImplementedError

    def write_on_epoch_end(self, trainer: Trainer, module: Module, predictions: Sequence[Any], batch_indices: Sequence[Any]) -> None:
        raise NotImplementedError

    def on_predict_epoch_start(self, trainer: Trainer, module: Module) -> None:
        self._predictions, self._indices, self._orders = [], [], {}

    def _batch_indices(self, trainer: Trainer, batch_idx: int, dataloader_idx: int) -> list[int] | None:
        loaders = trainer.predict_dataloaders
        loaders = [] if loaders is None else loaders if isinstance(loaders, list) else [loaders]
        if dataloader_idx >= len(loaders):
            return None
        batch_sampler = getattr(loaders[dataloader_idx], "batch_sampler", None)
        if batch_sampler is None or type(batch_sampler).__name__ != "BatchSampler":
            return None
        if dataloader_idx not in self._orders:
            self._orders[dataloader_idx] = [list(b) for b in batch_sampler] if batch_idx == 0 else []
        order = self._orders[dataloader_idx]
        return order[batch_idx] if batch_idx < len(order) else None

    def on_predict_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        indices = self._batch_indices(trainer, batch_idx, dataloader_idx)
        if self.interval in ("batch", "batch_and_epoch"):
            self.write_on_batch_end(trainer, module, outputs, indices, batch, batch_idx, dataloader_idx)
        if self.interval in ("epoch", "batch_and_epoch"):
            while len(self._predictions) <= dataloader_idx:
                self._predictions.append([])
                self._indices.append([])
            self._predictions[dataloader_idx].append(outputs)
            self._indices[dataloader_idx].append(indices)

    def on_predict_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if self.interval in ("epoch", "batch_and_epoch"):
            several = len(self._predictions) > 1
            predictions = self._predictions if several else (self._predictions[0] if self._predictions else [])
            indices = self._indices if several else (self._indices[0] if self._indices else [])
            self.write_on_epoch_end(trainer, module, predictions, indices)
        self._predictions, self._indices = [], []


class GradientAccumulationScheduler(Callback):
    """Change ``accumulate_grad_batches`` by epoch: ``{0: 8, 4: 4, 8: 1}``
    accumulates 8 batches from epoch 0, 4 from epoch 4 and none from epoch 8."""

    def __init__(self, scheduling: dict[int, int]) -> None:
        if not scheduling:
            raise ValueError("GradientAccumulationScheduler(scheduling={}) needs at least one {epoch: batches} entry.")
        for epoch, factor in scheduling.items():
            if not isinstance(epoch, int) or epoch < 0 or not isinstance(factor, int) or factor < 1:
                raise ValueError(
                    f"GradientAccumulationScheduler(scheduling={scheduling!r}): keys are epochs (int >= 0), values batch counts (int >= 1)."
                )
        self.scheduling = dict(sorted(scheduling.items()))
        if 0 not in self.scheduling:
            self.scheduling = {0: 1, **self.scheduling}

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        return [v for e, v in self.scheduling.items() if e <= epoch][-1]

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        if not module.automatic_optimization:
            raise RuntimeError("GradientAccumulationScheduler needs automatic optimization; accumulate yourself in manual optimization.")
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        # Set for the next epoch here: each epoch's optimizer stepping reads it when the epoch starts.
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch + 1)
