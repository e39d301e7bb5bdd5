"""Finding the dataloaders of a run and counting their batches."""

from __future__ import annotations

import math
import warnings
from typing import Any

from torch.utils.data import DataLoader, SequentialSampler

from ember.datamodule import DataModule
from ember.module import Module

_METHOD = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader", "predict": "predict_dataloader"}


def _overrides(obj: Any, base: type, name: str) -> bool:
    return obj is not None and getattr(type(obj), name, None) is not getattr(base, name, None)


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
