"""``CombinedLoader``: iterate several dataloaders (or any iterables) together,
under Lightning's name and modes (``from ember.utilities import CombinedLoader``).

``iterables`` is a dict, list or tuple of iterables (or a single one). Modes:

- ``"min_size"`` (default): one batch from each per step, until the shortest
  is exhausted. The batch has the container's shape (``{"a": batch_a, "b": batch_b}``).
- ``"max_size_cycle"``: until the longest is exhausted; shorter ones start over.
- ``"max_size"``: until the longest is exhausted; exhausted ones give ``None``.
- ``"sequential"``: all of the first, then all of the second, ...; each step
  is one iterable's batch.

Iterating yields ``(batch, batch_idx, dataloader_idx)`` as Lightning's does
(``dataloader_idx`` is 0 except in ``"sequential"`` mode).

As training data: ``trainer.fit(module, CombinedLoader({...}, mode))``, or a
dict/list of dataloaders, which is combined with ``"max_size_cycle"`` as
Lightning does. ``training_step`` then receives the combined batch. The
strategy prepares each inner dataloader (a ``DistributedSampler`` under DDP).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["CombinedLoader"]

MODES = ("min_size", "max_size_cycle", "max_size", "sequential")
_EXHAUSTED = object()


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


class CombinedLoader(Iterable[Any]):
    """Several iterables as one; see the module documentation."""

    def __init__(self, iterables: Any, mode: str = "min_size") -> None:
        if mode not in MODES:
            raise ValueError(f"CombinedLoader(mode={mode!r}): use one of {', '.join(repr(m) for m in MODES)}.")
        self.iterables = iterables
        self._mode = mode
        self.limits: list[int | float] | None = None

    # ------------------------------------------------------------------ structure
    @property
    def mode(self) -> str:
        return self._mode

    @property
    def flattened(self) -> list[Any]:
        """The inner iterables, in order."""
        if isinstance(self.iterables, dict):
            return list(self.iterables.values())
        if isinstance(self.iterables, (list, tuple)):
            return list(self.iterables)
        return [self.iterables]

    def _rebuild(self, values: list[Any]) -> Any:
        if isinstance(self.iterables, dict):
            return dict(zip(self.iterables, values, strict=True))
        if isinstance(self.iterables, (list, tuple)):
            return type(self.iterables)(values)
        return values[0]

    @property
    def sampler(self) -> Any:
        return self._rebuild([getattr(it, "sampler", None) for it in self.flattened])

    @property
    def batch_sampler(self) -> Any:
        return self._rebuild([getattr(it, "batch_sampler", None) for it in self.flattened])

    def _lengths(self) -> list[int | None]:
        lengths = [_length(it) for it in self.flattened]
        if self.limits is not None:
            lengths = [None if n is None else int(min(n, limit)) for n, limit in zip(lengths, self.limits, strict=True)]
        return lengths

    def __len__(self) -> int:
        lengths = self._lengths()
        if any(n is None for n in lengths):
            raise TypeError("CombinedLoader: an inner iterable has no length, so neither has the combination.")
        known = [int(n) for n in lengths if n is not None]
        if not known:
            return 0
        if self._mode == "min_size":
            return min(known)
        if self._mode == "sequential":
            return sum(known)
        return max(known)

    def reset(self) -> None:
        """Nothing is kept between iterations: each ``iter()`` starts every inner iterable afresh."""

    # ------------------------------------------------------------------ iteration
    def _iterators(self) -> list[Iterator[Any]]:
        its: list[Iterator[Any]] = []
        for iterable, n in zip(self.flattened, self._lengths(), strict=True):
            it = iter(iterable)
            its.append(itertools.islice(it, n) if self.limits is not None and n is not None else it)
        return its

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        if self._mode == "sequential":
            for dataloader_idx, it in enumerate(self._iterators()):
                for batch_idx, batch in enumerate(it):
                    yield batch, batch_idx, dataloader_idx
            return
        for batch_idx, batch in enumerate(self._zipped()):
            yield batch, batch_idx, 0

    def _zipped(self) -> Iterator[Any]:
        iterables = self.flattened
        its = self._iterators()
        if not its:
            return
        if self._mode == "min_size":
            for values in zip(*its, strict=False):
                yield self._rebuild(list(values))
            return
        done = [False] * len(its)
        lengths = self._lengths()
        while True:
            values = []
            for i, it in enumerate(its):
                value = next(it, _EXHAUSTED)
                if value is _EXHAUSTED:
                    done[i] = True
                    if all(done):
                        return
                    if self._mode == "max_size":
                        value = None
                    else:  # max_size_cycle: start this one over
                        fresh = iter(iterables[i])
                        its[i] = itertools.islice(fresh, lengths[i]) if self.limits is not None and lengths[i] is not None else fresh
                        value = next(its[i], None)
                values.append(value)
            if all(done):
                return
            yield self._rebuild(values)

    # ------------------------------------------------------------------ as ember's training data
    def batches(self, prepare: Callable[[Any], Any] | None = None) -> CombinedBatches:
        """What ember's fit loop iterates: the combined batches alone. ``prepare``
        (the strategy's ``process_dataloader``) is applied to each inner iterable."""
        inner = self.flattened if prepare is None else [prepare(it) for it in self.flattened]
        combined = CombinedLoader(self._rebuild(inner), self._mode)
        combined.limits = self.limits
        return CombinedBatches(combined)


class CombinedBatches:
    """A :class:`CombinedLoader` seen as a plain iterable of batches (no indices)."""

    def __init__(self, combined: CombinedLoader) -> None:
        self.combined = combined

    def __iter__(self) -> Iterator[Any]:
        for batch, _, _ in self.combined:
            yield batch

    def __len__(self) -> int:
        return len(self.combined)


def as_training_data(train: Any, prepare: Callable[[Any], Any]) -> CombinedBatches | None:
    """``train`` (what fit was given) as combined batches when it is a
    ``CombinedLoader`` or a dict/list/tuple of iterables (combined in
    ``"max_size_cycle"`` mode, as Lightning does); ``None`` for anything else."""
    if isinstance(train, CombinedLoader):
        return train.batches(prepare)
    members = list(train.values()) if isinstance(train, dict) else list(train) if isinstance(train, (list, tuple)) else []
    if members and all(hasattr(m, "__iter__") and not isinstance(m, (str, bytes)) and _length(m) is not None for m in members):
        from torch.utils.data import DataLoader

        if any(isinstance(m, DataLoader) for m in members):
            return CombinedLoader(train, "max_size_cycle").batches(prepare)
    return None
