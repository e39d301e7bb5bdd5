"""Finding the dataloaders of a run and counting their batches."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, SequentialSampler

from ember.datamodule import DataModule
from ember.module import Module

if TYPE_CHECKING:
    from ember.trainer import Trainer

_METHOD = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader", "predict": "predict_dataloader"}


def _overrides(obj: Any, base: type, name: str) -> bool:
    """Whether ``obj`` replaces ``base``'s ``name`` (in its class, or on the
    instance as ``DataModule.from_datasets`` does)."""
    if obj is None:
        return False
    return getattr(type(obj), name, None) is not getattr(base, name, None) or name in getattr(obj, "__dict__", ())


def resolve(kind: str, explicit: Any, datamodule: DataModule | None, module: Module) -> Any:
    """The dataloader(s) for ``kind``: passed explicitly, else from the
    DataModule, else from the module; ``None`` when nobody provides one."""
    if explicit is not None:
        return explicit
    name = _METHOD[kind]
    if _overrides(datamodule, DataModule, name):
        return getattr(datamodule, name)()
    if _overrides(module, Module, name):
        return getattr(module, name)()
    return None


def as_list(loaders: Any) -> list[Any]:
    """Evaluation and predict accept one dataloader or a list/tuple of them."""
    if loaders is None:
        return []
    if isinstance(loaders, (list, tuple)) and loaders and all(_is_loader(x) for x in loaders):
        return list(loaders)
    if isinstance(loaders, dict):
        return list(loaders.values())
    return [loaders]


def _is_loader(obj: Any) -> bool:
    return isinstance(obj, DataLoader) or (hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes)) and not hasattr(obj, "shape"))


def length(loader: Any) -> float:
    try:
        return float(len(loader))
    except (TypeError, NotImplementedError):
        return math.inf


def limited(loader: Any, limit: int | float | None, what: str) -> float:
    """Number of batches to use from ``loader`` given a ``limit_*_batches`` value."""
    n = length(loader)
    if limit is None:
        return n
    if isinstance(limit, bool):
        raise TypeError(f"{what} must be an int or a float, not a bool.")
    if isinstance(limit, int) or (isinstance(limit, float) and limit > 1.0 and limit.is_integer()):
        return float(min(n, int(limit)))
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"{what}={limit} must be an int (batches) or a float in [0, 1] (fraction).")
    if n == math.inf:
        if limit in (0.0, 1.0):
            return 0.0 if limit == 0.0 else n
        raise ValueError(f"{what}={limit} is a fraction, but the dataloader has no length; pass an int number of batches.")
    count = int(n * limit)
    if limit > 0 and count == 0:
        raise ValueError(f"{what}={limit} of {int(n)} batches is less than one batch; raise it or pass an int.")
    return float(count)


def sequential(loader: Any) -> Any:
    """The same DataLoader without shuffling (for ``overfit_batches``)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, SequentialSampler):
        return loader
    if loader.batch_sampler is not None and type(loader.batch_sampler).__name__ != "BatchSampler":
        warnings.warn("overfit_batches: the train loader has a custom batch sampler, so its order was left as it is.", stacklevel=3)
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )


def collect(trainer: Trainer, stage: str) -> None:
    """Find the dataloaders of ``stage``, let the strategy adapt them, count
    their batches, and store all of it on the trainer."""
    module, dm, explicit = trainer.module, trainer.datamodule, trainer.state.explicit_loaders
    assert module is not None
    process = trainer.strategy.process_dataloader
    if stage == "fit":
        train = resolve("train", explicit.get("train"), dm, module)
        if train is None:
            raise ValueError(
                f"No training data: pass train_dataloaders to fit(), a DataModule with train_dataloader(), "
                f"or implement {type(module).__name__}.train_dataloader()."
            )
        from ember.combined_loader import as_training_data  # a CombinedLoader, or a dict/list of dataloaders

        combined = as_training_data(train, lambda loader: process(sequential(loader) if trainer.overfit_batches else loader, "fit"))
        if combined is not None:
            trainer.state.train_loader = combined
        else:
            if trainer.overfit_batches:
                train = sequential(train)
            trainer.state.train_loader = process(train, "fit")
        trainer.num_training_batches = limited(trainer.state.train_loader, trainer.limit_train_batches, "limit_train_batches")
        has_val = type(module).validation_step is not Module.validation_step
        val = resolve("val", explicit.get("val"), dm, module) if has_val else None
        trainer.state.val_loaders = [process(v, "validate") for v in as_list(val)]
        trainer.num_val_batches = [limited(v, trainer.limit_val_batches, "limit_val_batches") for v in trainer.state.val_loaders]
        steps = trainer.num_sanity_val_steps
        trainer.num_sanity_val_batches = [min(n, math.inf if steps == -1 else steps) for n in trainer.num_val_batches]
        trainer._val_check_batch = val_check_batch(trainer)
    elif stage in ("validate", "test"):
        kind = "val" if stage == "validate" else "test"
        step_name = "validation_step" if stage == "validate" else "test_step"
        if getattr(type(module), step_name) is getattr(Module, step_name):
            raise NotImplementedError(f"trainer.{stage}() needs {type(module).__name__}.{step_name}(batch, batch_idx).")
        loaders = resolve(kind, explicit.get(kind), dm, module)
        if loaders is None:
            raise ValueError(
                f"No {kind} data: pass dataloaders to trainer.{stage}(), a DataModule with {_METHOD[kind]}(), or implement {type(module).__name__}.{_METHOD[kind]}()."
            )
        limit = trainer.limit_val_batches if stage == "validate" else trainer.limit_test_batches
        trainer.state.eval_loaders = [process(v, stage) for v in as_list(loaders)]
        counts = [limited(v, limit, f"limit_{kind}_batches") for v in trainer.state.eval_loaders]
        if stage == "validate":
            trainer.num_val_batches = counts
        else:
            trainer.num_test_batches = counts
    else:
        loaders = resolve("predict", explicit.get("predict"), dm, module)
        if loaders is None:
            raise ValueError(
                f"No predict data: pass dataloaders to trainer.predict(), a DataModule with predict_dataloader(), or implement {type(module).__name__}.predict_dataloader()."
            )
        trainer.state.predict_loaders = [process(v, "predict") for v in as_list(loaders)]
        trainer.num_predict_batches = [limited(v, trainer.limit_predict_batches, "limit_predict_batches") for v in trainer.state.predict_loaders]


def val_check_batch(trainer: Trainer) -> float:
    """After how many training batches validation runs (``inf``: at epoch end only)."""
    interval = trainer.val_check_interval
    n = trainer.num_training_batches
    if isinstance(interval, float) and not (isinstance(interval, bool)):
        if not 0.0 < interval <= 1.0:
            raise ValueError(
                f"val_check_interval={interval} as a float must be in (0, 1] (a fraction of the epoch); pass an int for a number of batches."
            )
        if n == math.inf:
            if interval != 1.0:
                raise ValueError("val_check_interval as a fraction needs a training dataloader with a length; pass an int.")
            return math.inf
        return max(1, int(n * interval))
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f"val_check_interval={interval!r} must be a positive int (batches) or a float in (0, 1].")
    if n != math.inf and interval > n:
        raise ValueError(
            f"val_check_interval={interval} is more than the {int(n)} training batches per epoch; lower it or pass a fraction."
        )
    return float(interval)


def datamodule_from_datasets(cls: type, datasets: tuple[Any, ...], batch_size: int, num_workers: int, init_kwargs: dict[str, Any]) -> Any:
    """``DataModule.from_datasets``: an instance of ``cls`` whose four dataloader
    methods wrap ``datasets`` (train, val, test, predict; ``None`` leaves the
    method unimplemented)."""

    def loaders(ds: Any, shuffle: bool) -> Any:
        if isinstance(ds, (list, tuple)):
            return [loaders(d, shuffle) for d in ds]
        if isinstance(ds, dict):
            return {k: loaders(d, shuffle) for k, d in ds.items()}
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, persistent_workers=num_workers > 0)

    dm = cls(**init_kwargs)
    for name, ds in zip(("train", "val", "test", "predict"), datasets, strict=True):
        if ds is not None:
            setattr(dm, f"{name}_dataloader", lambda ds=ds, shuffle=name == "train": loaders(ds, shuffle))
    return dm
