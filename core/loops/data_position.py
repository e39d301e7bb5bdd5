"""Where in the epoch's data a checkpoint stopped, counted in samples.

A checkpoint saved inside an epoch records, besides the batches done, how the
data was read: the per-process batch size, how many processes split the data
(a ``DistributedSampler``'s ``num_replicas``), the sampler (kind, shuffle,
seed) and so the **samples done**: batches x batch size x processes. Every
process of a split loader reads every ``num_replicas``-th sample of one global
order, so after ``k`` batches the first ``k x B x W`` samples of that order are
done, whatever rank read which.

A run that resumes with the same global batch (processes x batch size) and
the same order skips the same number of batches, as before. With another
batch size or number of processes ember continues at the exact sample when it
can: the global order must be the same (sequential either way; shuffled by a
``DistributedSampler`` with the same seed, whatever the number of processes;
or shuffled by a single process's ``RandomSampler``), and the samples done
must be a whole number of the new global batches. Otherwise it refuses with
:class:`ResumeMismatchError`, naming both settings. It never skips or repeats
data silently.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler


class ResumeMismatchError(ValueError):
    """A mid-epoch checkpoint cannot be continued exactly with this run's data settings."""


def _describe(loader: Any, world_size: int) -> dict[str, Any]:
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is not None and getattr(loader, "batch_size", None) is None:
        sampler = getattr(batch_sampler, "sampler", sampler)  # a custom batch sampler: only its type is known
    info: dict[str, Any] = {"batch_size": getattr(loader, "batch_size", None), "world_size": int(world_size), "replicas": 1}
    if isinstance(sampler, DistributedSampler):
        info["replicas"] = int(sampler.num_replicas)
        info["sampler"] = {"kind": "distributed", "shuffle": bool(sampler.shuffle), "seed": int(sampler.seed)}
    elif type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        info["sampler"] = {"kind": "random"}
    elif type(sampler) is SequentialSampler:
        info["sampler"] = {"kind": "sequential"}
    else:
        info["sampler"] = {"kind": type(batch_sampler if info["batch_size"] is None else sampler).__name__}
    info["global_batch_size"] = info["batch_size"] * info["replicas"] if info["batch_size"] else None
    return info


def data_position(loader: Any, batches_done: int, world_size: int) -> dict[str, Any]:
    """What a checkpoint records about the data: :func:`_describe` plus ``samples_done``."""
    info = _describe(loader, world_size)
    info["batches_done"] = int(batches_done)
    info["samples_done"] = int(batches_done) * info["global_batch_size"] if info["global_batch_size"] else None
    return info


def _order(info: dict[str, Any]) -> tuple[Any, ...]:
    """A key equal for two settings that visit the samples of an epoch in the same global order."""
    sampler = info["sampler"]
    kind = sampler["kind"]
    if kind == "sequential" or (kind == "distributed" and not sampler["shuffle"]):
        return ("in order",)
    if kind == "distributed":
        return ("distributed shuffle", sampler["seed"])
    if kind == "random" and info["replicas"] == 1:
        return ("random",)
    return (kind, info["replicas"])


def _setting(info: dict[str, Any]) -> str:
    sampler = info["sampler"]
    kind = sampler["kind"]
    if kind == "distributed":
        how = f"a DistributedSampler (shuffle={sampler['shuffle']}, seed={sampler['seed']})"
    elif kind in ("random", "sequential"):
        how = f"a {kind} sampler"
    else:
        how = f"a {kind}"
    return (
        f"{info['world_size']} process(es) x batch size {info['batch_size']} = global batch {info['global_batch_size']}, reading with {how}"
    )


def batches_to_skip(
    loader: Any, saved: dict[str, Any] | None, batches_done: int, world_size: int, epoch: int, mid_window: bool = False
) -> int:
    """Batches of ``loader`` to skip to continue a checkpoint that stopped after
    ``batches_done`` batches of epoch ``epoch`` (``saved``: its :func:`data_position`;
    ``mid_window``: it holds the gradients of an unfinished accumulation window)."""
    if not batches_done or not saved:
        return batches_done  # at an epoch boundary, or a checkpoint older than these records
    now = _describe(loader, world_size)
    same = all(now.get(k) == saved.get(k) for k in ("batch_size", "replicas", "sampler"))
    if same:
        return batches_done
    where = f"The checkpoint stopped inside epoch {epoch} after {saved.get('samples_done')} samples"
    if _order(now) != _order(saved) or not saved.get("samples_done") or not now["global_batch_size"]:
        raise ResumeMismatchError(
            f"{where} ({_setting(saved)}); this run uses {_setting(now)}, which visits the samples in another order, "
            "so the rest of the epoch would skip some and repeat others. Resume with the saved settings, or from a "
            "checkpoint saved at an epoch boundary."
        )
    if mid_window:
        raise ResumeMismatchError(
            f"{where} ({_setting(saved)}), inside a gradient-accumulation window whose gradients it holds; this run uses "
            f"{_setting(now)}, so the window would mix batches of both sizes. Resume with the saved settings, or from a "
            "checkpoint saved at the end of an accumulation window or epoch."
        )
    samples, step = saved["samples_done"], now["global_batch_size"]
    if samples % step:
        raise ResumeMismatchError(
            f"{where} ({_setting(saved)}); this run uses {_setting(now)}, and {samples} is not a multiple of {step}, "
            f"so no batch boundary falls at sample {samples}. Resume with a global batch that divides {samples} "
            f"(such as {saved['global_batch_size']}), or from a checkpoint saved at an epoch boundary."
        )
    return samples // step
