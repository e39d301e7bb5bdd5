"""The distributed sampler ``ddp`` (and ``fsdp``, ``deepspeed``, ember-xla's
``xla_ddp``) inserts into plain map-style ``DataLoader``s, so that each process
reads its own slice."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler


def split_across_ranks(
    dataloader: Any, stage: str, world_size: int, rank: int, warn_once: Callable[[str, str], None], name: str = "ddp"
) -> Any:
    """``dataloader`` with a ``DistributedSampler`` in place of its sequential or
    random sampler; anything else is returned as it is (with a warning once,
    through ``warn_once(key, message)``; ``name``, the strategy's, starts the message)."""
    if not isinstance(dataloader, DataLoader):
        return dataloader
    if isinstance(dataloader.dataset, IterableDataset):
        return dataloader
    sampler = dataloader.sampler
    if isinstance(sampler, DistributedSampler):
        return dataloader
    custom_batch_sampler = dataloader.batch_sampler is not None and type(dataloader.batch_sampler).__name__ != "BatchSampler"
    if type(dataloader) is not DataLoader or custom_batch_sampler or type(sampler) not in (SequentialSampler, RandomSampler):
        what = (
            f"a DataLoader subclass ({type(dataloader).__name__})"
            if type(dataloader) is not DataLoader
            else f"a custom {'batch sampler' if custom_batch_sampler else 'sampler'} "
            f"({type(dataloader.batch_sampler if custom_batch_sampler else sampler).__name__})"
        )
        warn_once(
            what,
            f"{name}: the {stage} dataloader uses {what}, so ember did not insert a DistributedSampler: every process "
            "sees the data that loader yields. Split it across ranks yourself, or pass a plain DataLoader.",
        )
        return dataloader
    if isinstance(sampler, RandomSampler):
        if sampler.replacement or sampler._num_samples is not None:
            warn_once(
                "random-replacement",
                f"{name}: the {stage} dataloader samples with replacement or a custom num_samples; it was left as it is.",
            )
            return dataloader
        shuffle = True
    else:
        shuffle = False
    seed = int(os.environ.get("EMBER_GLOBAL_SEED", 0))
    distributed = DistributedSampler(dataloader.dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
    return with_sampler(dataloader, distributed)


def with_sampler(loader: DataLoader, sampler: Any) -> DataLoader:
    """The same DataLoader with ``sampler`` in place of its own."""
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "sampler": sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": getattr(loader, "pin_memory_device", ""),
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    if hasattr(loader, "in_order"):
        kwargs["in_order"] = loader.in_order
    return DataLoader(loader.dataset, **kwargs)
