"""Where the fit loop is, precisely enough to continue bit-for-bit.

A checkpoint records the fit loop's :class:`FitPosition`: the epoch phase,
how many batches of the epoch are done, whether the validation due after the
last batch has run, the random-number state at the start of the epoch (so
the resumed epoch shuffles the same way) and at the moment of saving, the
epoch's logged values so far, and gradients accumulated in an unfinished
accumulation window.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from ember.loops.data_position import ResumeMismatchError, batches_to_skip, data_position  # noqa: F401 (fit.py imports them here)
from ember.roles import GathersObjects
from ember.seed import rng_state, set_rng_state

if TYPE_CHECKING:
    from ember.trainer import Trainer

BATCHES = "batches"  # inside the batch loop (or about to start it)
EPOCH_END = "epoch_end"  # the batches are done; on_train_epoch_end has started


@dataclass
class FitPosition:
    phase: str = BATCHES
    batches_done: int = 0
    val_pending: bool = False
    epoch_rng: dict[str, Any] | None = None
    # Only set on a position restored from a checkpoint:
    rng: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    accumulated_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    #: How the interrupted run read its data (see :func:`data_position`); ``None`` in older checkpoints.
    data: dict[str, Any] | None = None
    #: Random state at the start of the evaluation in progress (validation or
    #: sanity check): a checkpoint written during it resumes by running it again.
    val_rng: dict[str, Any] | None = None
    #: ``fit`` stopped at ``max_steps`` inside an epoch: the loop state and LR
    #: scheduler states of that moment, before the epoch-end hooks ran, so that
    #: a checkpoint saved afterwards continues the epoch (see :func:`pause_state`).
    paused: dict[str, Any] | None = None

    @property
    def resumes_inside_epoch(self) -> bool:
        return self.phase == EPOCH_END or self.batches_done > 0 or self.val_pending


def _generators(loader: Any) -> list[torch.Generator]:
    """Explicit generators a DataLoader's order depends on (besides the global one)."""
    found = []
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (loader, sampler, getattr(batch_sampler, "sampler", None)):
        generator = getattr(obj, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def _seeded_sampler(loader: Any) -> Any:
    """A sampler that shuffles from its own ``seed`` (and ``set_epoch``), like
    ``DistributedSampler``: its order depends on that seed, not on a generator."""
    for obj in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if isinstance(getattr(obj, "seed", None), int) and hasattr(obj, "set_epoch"):
            return obj
    return None


def epoch_snapshot(loader: Any) -> dict[str, Any]:
    """Random state that decides an epoch's order: taken just before ``iter(loader)``."""
    snapshot: dict[str, Any] = {"global": rng_state(), "loader": [g.get_state() for g in _generators(loader)]}
    sampler = _seeded_sampler(loader)
    if sampler is not None:
        snapshot["sampler_seed"] = sampler.seed
    return snapshot


def restore_epoch_snapshot(loader: Any, snapshot: dict[str, Any]) -> None:
    set_rng_state(snapshot["global"])
    for generator, state in zip(_generators(loader), snapshot.get("loader", []), strict=False):
        generator.set_state(state)
    sampler = _seeded_sampler(loader)
    if sampler is not None and "sampler_seed" in snapshot:
        sampler.seed = snapshot["sampler_seed"]  # the relaunch may have a different global seed


def warn_if_not_exactly_resumable(loader: Any, skip: int) -> None:
    dataset = getattr(loader, "dataset", None)
    if isinstance(dataset, IterableDataset) or not isinstance(loader, DataLoader):
        what = "an IterableDataset" if isinstance(dataset, IterableDataset) else f"a {type(loader).__name__}"
        warnings.warn(
            f"Resuming inside an epoch whose training data comes from {what}: ember skips the first {skip} batches "
            "it yields, which reproduces the interrupted run only if the data arrives in the same order again. "
            "Batches, and therefore weights, may differ from an uninterrupted run.",
            stacklevel=3,
        )


def fast_forward(loader: Any, iterator: Any, skip: int) -> bool:
    """Advance ``iterator`` past ``skip`` batches. A single-process DataLoader
    over a map-style dataset skips indices without loading any data; otherwise
    the batches are fetched and dropped (workers then stay in step). Returns
    ``False`` when the data ran out first."""
    if skip <= 0:
        return True
    if (
        isinstance(loader, DataLoader)
        and loader.num_workers == 0
        and not isinstance(loader.dataset, IterableDataset)
        and hasattr(iterator, "_next_index")
    ):
        for _ in range(skip):
            try:
                iterator._next_index()
            except StopIteration:
                return False
            iterator._num_yielded += 1
        return True
    for _ in range(skip):
        try:
            next(iterator)
        except StopIteration:
            return False
    return True


def accumulated_grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}


def restore_grads(module: torch.nn.Module, grads: dict[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    for name, grad in grads.items():
        params[name].grad = grad.to(device=params[name].device, dtype=params[name].dtype)


def position_state(trainer: Trainer) -> dict[str, Any]:
    """The fit loop's state for a checkpoint."""
    position = trainer.state.position
    if position.paused is not None:
        return position.paused["loop"]
    state: dict[str, Any] = {
        "phase": position.phase,
        "batches_done": position.batches_done,
        "val_pending": position.val_pending,
        "rng": position.val_rng if position.val_rng is not None else rng_state(),
    }
    if position.epoch_rng is not None:
        state["epoch_rng"] = position.epoch_rng
    loader = trainer.state.train_loader
    if loader is not None:
        state["data"] = data_position(loader, position.batches_done, trainer.world_size)
    gather = trainer.strategy.all_gather_object if isinstance(trainer.strategy, GathersObjects) else None
    if trainer.strategy.world_size > 1 and gather is not None:
        # Every rank draws its own random numbers (dropout, augmentation): keep
        # each rank's, so that each resumes exactly. Rank zero writes the file.
        state["rng_per_rank"] = gather(state["rng"])
        state["epoch_rng_per_rank"] = gather(position.epoch_rng)
    if trainer.state.train_results is not None and (position.batches_done or position.phase == EPOCH_END):
        state["results"] = trainer.state.train_results.state_dict(trainer.module)
    stepper = trainer._stepper
    if stepper is not None and stepper.mid_window:
        state["accumulated_grads"] = accumulated_grads(trainer.module)  # type: ignore[arg-type]
    return state


def position_from_state(state: dict[str, Any], rank: int = 0, world_size: int = 1) -> FitPosition:
    per_rank = state.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == world_size:
        state = {**state, "rng": per_rank[rank], "epoch_rng": state.get("epoch_rng_per_rank", [None] * world_size)[rank]}
    elif per_rank is not None or world_size > 1:
        warnings.warn(
            f"The checkpoint was written by {len(per_rank) if per_rank else 1} process(es) and is resumed by {world_size}: "
            "each process continues from rank zero's random state, so dropout and shuffling will not match the interrupted run.",
            stacklevel=3,
        )
    return FitPosition(
        phase=state.get("phase", BATCHES),
        batches_done=int(state.get("batches_done", 0)),
        val_pending=bool(state.get("val_pending", False)),
        epoch_rng=state.get("epoch_rng"),
        rng=state.get("rng"),
        results=state.get("results"),
        accumulated_grads=state.get("accumulated_grads", {}),
        data=state.get("data"),
    )
