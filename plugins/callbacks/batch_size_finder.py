"""``BatchSizeFinder``: the largest batch size that fits, found before training.

Each trial sets the batch size, builds the training dataloader anew and
trains a deep copy of the module for ``steps_per_trial`` steps with a quiet
inner trainer on the same device. ``mode="power"`` doubles the size from
``init_val`` until a trial runs out of memory (``torch.cuda.OutOfMemoryError``,
or a ``RuntimeError`` whose message says "out of memory") or the size reaches
the number of samples in the dataset, and keeps the last size that fitted.
``mode="binsearch"`` doubles the same way, then bisects between the last size
that fitted and the first that did not.

The batch size lives in an attribute named ``batch_arg_name``: of the
DataModule when it has one (as an attribute or in its ``hparams``), else of
the module; the finder writes the result there (and to ``hparams`` where the
name is one), so the real run's dataloader uses it and checkpoints record it.
The real module never trains during the search and the random generators are
put back afterwards.

It runs in the ``setup`` hook of ``fit``, after the DataModule's ``setup`` and
before the trainer builds the dataloaders. Dataloaders passed to ``fit()``
directly cannot be resized: give the batch size to a DataModule or the module.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.plugins.callbacks import _tuning
from ember.suggest import did_you_mean

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

_MODES = ("power", "binsearch")


class BatchSizeFinderError(RuntimeError):
    """The batch size cannot be searched (where it lives, or nothing fits)."""


def _dataset_size(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    from torch.utils.data import IterableDataset

    if dataset is None or isinstance(dataset, IterableDataset):
        return None
    try:
        return len(dataset)
    except TypeError:
        return None


class BatchSizeFinder(Callback):
    """Scale the batch size up until it no longer fits in memory (or covers the dataset).

    :param mode: ``"power"`` (keep doubling) or ``"binsearch"`` (double, then bisect).
    :param init_val: the first size tried.
    :param max_trials: at most this many trials (each ``steps_per_trial`` steps).
    :param steps_per_trial: optimizer steps per trial.
    :param batch_arg_name: the attribute (or ``hparams`` key) that holds the batch size.
    :param margin: ``"binsearch"`` keeps this fraction below the largest size that fitted, as a safety buffer.
    :param max_val: never try a batch size above this.

    After ``fit``: :attr:`optimal_batch_size` and :attr:`trials` (``(size, fitted)`` pairs, in order).
    """

    def __init__(
        self,
        mode: str = "power",
        init_val: int = 2,
        max_trials: int = 25,
        steps_per_trial: int = 3,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"BatchSizeFinder(mode={mode!r}) must be 'power' or 'binsearch'.{did_you_mean(str(mode), _MODES)}")
        if init_val < 1 or max_trials < 1 or steps_per_trial < 1:
            raise ValueError(
                f"BatchSizeFinder needs init_val, max_trials and steps_per_trial of at least 1; "
                f"got {init_val}, {max_trials}, {steps_per_trial}."
            )
        self.mode = mode
        self.init_val = init_val
        self.max_trials = max_trials
        self.steps_per_trial = steps_per_trial
        self.batch_arg_name = batch_arg_name
        if not 0.0 <= margin < 1.0 or max_val < init_val:
            raise ValueError(f"BatchSizeFinder(margin={margin}, max_val={max_val}): margin in [0, 1), max_val >= init_val.")
        self.margin = margin
        self.max_val = max_val
        self.optimal_batch_size: int | None = None
        self.trials: list[tuple[int, bool]] = []

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage != "fit" or _tuning.is_tuning_copy(module):
            return
        self.scale_batch_size(trainer, module)

    # ------------------------------------------------------------------ the search
    def _holder(self, trainer: Trainer, module: Module) -> Any:
        explicit = trainer.explicit_dataloaders.get("train")
        if explicit is not None:
            raise BatchSizeFinderError(
                "BatchSizeFinder cannot resize dataloaders passed to fit() directly. Build the training dataloader in a "
                f"DataModule or in {type(module).__name__}.train_dataloader() from a `{self.batch_arg_name}` attribute."
            )
        for obj in (trainer.datamodule, module):
            if _tuning.has_attr(obj, self.batch_arg_name):
                return obj
        where = (
            f"{type(trainer.datamodule).__name__} nor {type(module).__name__}" if trainer.datamodule is not None else type(module).__name__
        )
        raise BatchSizeFinderError(
            f"BatchSizeFinder scales an attribute named {self.batch_arg_name!r}, and neither {where} has one (nor an hparams entry). "
            "Store the batch size there and build the training dataloader from it, or pass batch_arg_name=."
        )

    def scale_batch_size(self, trainer: Trainer, module: Module) -> int:
        """Search, write the result to the holder of the batch size, and return it."""
        holder = self._holder(trainer, module)
        on_module = holder is module
        original = _tuning.get_attr(holder, self.batch_arg_name)
        self.trials = []
        self._stopped_by_max_trials = False

        def fits(size: int) -> tuple[bool, int | None]:
            """Run one trial; ``(fitted, samples in the dataset)``."""
            clone = _tuning.copy_module(module)
            try:
                if on_module:
                    _tuning.set_attr(clone, self.batch_arg_name, size)
                    loader = clone.train_dataloader() if trainer.datamodule is None else trainer.datamodule.train_dataloader()
                else:
                    _tuning.set_attr(holder, self.batch_arg_name, size)
                    loader = holder.train_dataloader()
                inner = _tuning.inner_trainer(trainer, [], self.steps_per_trial, root, limit_train_batches=self.steps_per_trial)
                try:
                    inner.fit(clone, train_dataloaders=loader)
                except BaseException as exc:
                    if not _tuning.is_oom(exc):
                        raise
                    self.trials.append((size, False))
                    return False, _dataset_size(loader)
                self.trials.append((size, True))
                return True, _dataset_size(loader)
            finally:
                del clone
                _tuning.release_memory()

        try:
            with _tuning.trial_scope() as root:
                found = self._search(fits)
        except BaseException:
            _tuning.set_attr(holder, self.batch_arg_name, original)
            raise
        if self._stopped_by_max_trials:  # warned out here: the trials' own warnings are hidden
            warnings.warn(
                f"BatchSizeFinder stopped after max_trials={self.max_trials} trials; batch size {found} fitted and larger "
                "ones were not tried.",
                stacklevel=2,
            )
        if trainer.world_size > 1:
            found = trainer.strategy.broadcast(found, src=0)
        self.optimal_batch_size = found
        _tuning.set_attr(holder, self.batch_arg_name, found)
        return found

    def _search(self, fits: Any) -> int:
        size, good, bad = self.init_val, None, None
        trials = 0
        while trials < self.max_trials:
            ok, total = fits(size)
            trials += 1
            if not ok:
                bad = size
                break
            good = size
            if total is not None and size >= total:
                return size  # a batch holds the whole dataset: no use going further
            if size >= self.max_val:
                return size
            size = min(size * 2 if total is None else min(size * 2, total), self.max_val)
        if good is None:
            raise BatchSizeFinderError(
                f"BatchSizeFinder: even batch size {self.init_val} (init_val) ran out of memory. Use a smaller init_val, "
                "a smaller model, or lower precision."
            )
        if bad is None:
            self._stopped_by_max_trials = trials >= self.max_trials
            return good
        if self.mode == "binsearch":
            while bad - good > 1 and trials < self.max_trials:
                mid = (good + bad) // 2
                ok, _ = fits(mid)
                trials += 1
                if ok:
                    good = mid
                else:
                    bad = mid
            return max(self.init_val, int(good * (1.0 - self.margin)))
        return good


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "batch_size_finder", BatchSizeFinder)
