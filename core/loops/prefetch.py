"""Batches on their way to the device before the step that needs them.

:class:`DevicePrefetcher` wraps the training loader's iterator. Each batch
goes through the strategy's ``batch_to_device`` (so whatever that does,
moving, casting for the precision, is done exactly once per batch, in
order), but on CUDA the copy is issued from pinned host memory on a side
stream: the host does not wait for it, and the copy overlaps the GPU work
of the step before. The compute stream waits for the copy's event before
the batch is used, and the batch's memory is recorded against the compute
stream so the caching allocator does not hand it out early.

``depth`` is how many batches are fetched ahead of the one the loop is
using. ``0`` fetches nothing early (the copy still overlaps whatever the GPU
has queued); ``1`` starts batch ``i + 1``'s copy before step ``i`` runs.
Fetching early changes *when* the loader's ``__getitem__`` runs relative to
the steps; when that happens in this process (``num_workers=0``) a dataset
drawing random numbers would draw them in another order than without
prefetching, so the automatic depth is 1 only for loaders with worker
processes and 0 otherwise.

On or off, by the trainer's ``device_prefetch`` (``None``, the default:
on for a CUDA device, off elsewhere; ``False``: off; ``True``: on with the
automatic depth; an ``int``: on with that depth). Off, the loop is exactly
what it was: nothing wraps the iterator and nothing is done per step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch


def _pin(batch: Any) -> Any:
    """Page-locked copies of the CPU tensors in ``batch`` (already pinned ones as they are)."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory() if batch.device.type == "cpu" and not batch.is_pinned() else batch
    if isinstance(batch, (list, tuple)):
        pinned = [_pin(b) for b in batch]
        return type(batch)(*pinned) if hasattr(batch, "_fields") else type(batch)(pinned)
    if isinstance(batch, dict):
        return type(batch)((k, _pin(v)) for k, v in batch.items())
    return batch


def _record_stream(batch: Any, stream: Any) -> None:
    if isinstance(batch, torch.Tensor):
        if batch.is_cuda:
            batch.record_stream(stream)
    elif isinstance(batch, (list, tuple)):
        for b in batch:
            _record_stream(b, stream)
    elif isinstance(batch, dict):
        for b in batch.values():
            _record_stream(b, stream)


class DevicePrefetcher:
    """An iterator over ``iterator``'s batches, each already passed through
    ``to_device``; on CUDA the transfers run ahead on a side stream.

    :param iterator: the loader's iterator (already fast-forwarded on resume).
    :param to_device: the strategy's ``batch_to_device``.
    :param device: where the batches go; the CUDA path needs a CUDA device.
    :param depth: batches fetched ahead of the one in use (0 or more).
    :param pin: pin CPU tensors before copying (CUDA only; a loader with
        ``pin_memory=True`` has done it already and nothing is copied twice).
    """

    def __init__(
        self, iterator: Iterator[Any], to_device: Callable[[Any], Any], device: torch.device, depth: int = 1, pin: bool = True
    ) -> None:
        if depth < 0:
            raise ValueError(f"device_prefetch depth must be 0 or more, not {depth}.")
        self.iterator = iterator
        self.to_device = to_device
        self.device = device
        self.depth = depth
        cuda = device.type == "cuda" and torch.cuda.is_available()
        self.stream = torch.cuda.Stream(device=device) if cuda else None
        self.pin = pin and cuda
        self.queue: deque[tuple[Any, Any]] = deque()
        self.exhausted = False
        self.fetched = 0  #: batches taken from ``iterator`` so far

    def __iter__(self) -> DevicePrefetcher:
        return self

    def _start(self, batch: Any) -> tuple[Any, Any]:
        self.fetched += 1
        stream = self.stream
        if stream is None:
            return self.to_device(batch), None
        if self.pin:
            batch = _pin(batch)
        # Kernels already queued on the compute stream may produce what the
        # transfer reads (a batch that is already on the GPU): wait for them.
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            moved = self.to_device(batch)
        return moved, stream.record_event()

    def __next__(self) -> Any:
        queue = self.queue
        while not self.exhausted and len(queue) <= self.depth:
            try:
                batch = next(self.iterator)
            except StopIteration:
                self.exhausted = True
                break
            queue.append(self._start(batch))
        if not queue:
            raise StopIteration
        batch, event = queue.popleft()
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            _record_stream(batch, current)
        return batch


def resolve_depth(setting: Any, device: torch.device, loader: Any) -> int | None:
    """The prefetch depth for ``setting`` (the trainer's ``device_prefetch``), or ``None`` for off."""
    if setting is None:
        setting = device.type == "cuda"
    if setting is False:
        return None
    if setting is True:
        return 1 if getattr(loader, "num_workers", 0) > 0 else 0
    if isinstance(setting, int) and setting >= 0:
        return setting
    raise ValueError(f"Trainer.device_prefetch must be None, True, False or a depth >= 0, not {setting!r}.")


def wrap(trainer: Any, loader: Any, iterator: Iterator[Any], to_device: Callable[[Any], Any]) -> DevicePrefetcher | None:
    """The prefetching iterator for this epoch, or ``None`` when prefetching is off."""
    device = trainer.strategy.root_device
    depth = resolve_depth(trainer.device_prefetch, device, loader)
    if depth is None:
        return None
    return DevicePrefetcher(iterator, to_device, device, depth)
