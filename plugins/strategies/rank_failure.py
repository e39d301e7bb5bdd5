"""What a multi-process strategy does when one of its ranks fails or hangs.

- A rank that raises leaves at once. ember's ``on_exception`` hook marks the
  strategy as failed; from then on its collectives (``barrier``,
  ``broadcast``, ``all_gather_object``, ``reduce``, a checkpoint save) raise
  :class:`RankFailedError` instead of waiting for ranks that are not coming,
  and no exit barrier is held. The launcher (torchrun, srun, ember's spawn
  launcher) sees the process end with the original error and stops the job.
  The price: no ``on_exception`` checkpoint is written in a multi-process run
  (it is a collective the other ranks never join); resume from the last
  periodic checkpoint.
- Collectives time out after :data:`DEFAULT_TIMEOUT` unless the strategy is
  given another ``timeout`` (``DDPStrategy(timeout=120)``; in a stack,
  ``[trainer.strategy]`` with ``name = "ddp"`` and ``init_args = {timeout =
  120}``; or ``EMBER_DIST_TIMEOUT=120`` in the environment). When a collective times out,
  each healthy rank signs in to a roll call in the group's key-value store and,
  after a short wait, names the ranks that did not sign in: the hung ones.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any

import torch.distributed as dist

from ember.errors import add_note

#: Collective timeout when the strategy is given none (torch's own default is 30 minutes).
DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)
#: Environment variable (seconds) for the timeout when the strategy is given none.
TIMEOUT_VARIABLE = "EMBER_DIST_TIMEOUT"
#: How long the healthy ranks wait for each other when naming a hung rank.
_ROLL_CALL_S = 10.0


class RankFailedError(RuntimeError):
    """A collective was skipped because this rank already failed."""


def as_timeout(value: datetime.timedelta | float | None) -> datetime.timedelta:
    """``timeout=`` of a strategy (seconds or a ``timedelta``; ``None``: ``EMBER_DIST_TIMEOUT``
    seconds from the environment, else :data:`DEFAULT_TIMEOUT`) as a ``timedelta``."""
    if value is None:
        text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{TIMEOUT_VARIABLE}={text!r}: give the collective timeout in seconds, as in {TIMEOUT_VARIABLE}=600."
            ) from None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        value = datetime.timedelta(seconds=seconds)
    else:
        raise TypeError(f"timeout={value!r}: give the collective timeout in seconds (a number) or as a datetime.timedelta.")
    if seconds <= 0:
        raise ValueError(f"timeout={value!r}: the collective timeout must be positive.")
    return value


def skipped(rank: int, world: int, what: str, failure: BaseException) -> RankFailedError:
    return RankFailedError(
        f"rank {rank} (of {world}) skipped {what}: this rank already raised {type(failure).__name__}, "
        "and the other ranks are not at the same point to join it."
    )


def is_timeout(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return "timed out" in text or "timeout" in text


def _store() -> Any:
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


def name_hung_ranks(rank: int, world: int, timeout: datetime.timedelta, exc: BaseException) -> str | None:
    """After a collective timed out in this (healthy) rank: a roll call through the
    group's key-value store (the group's own connections are closed after a
    timeout). Every rank that timed out signs in; the ranks that have not signed
    in after a short wait are the hung (or dead) ones. Returns the line to report."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    store = _store()
    prefix = "ember/roll_call/"
    store.set(f"{prefix}{rank}", "here")
    deadline = time.monotonic() + min(_ROLL_CALL_S, timeout.total_seconds())
    keys = [f"{prefix}{r}" for r in range(world)]
    while time.monotonic() < deadline and not store.check(keys):
        time.sleep(0.2)
    missing = [r for r, key in enumerate(keys) if not store.check([key])]
    if not missing:
        return f"ember: rank {rank} (of {world}): a collective timed out after {timeout}, yet every rank answered the roll call after it."
    return (
        f"ember: rank(s) {', '.join(map(str, missing))} (of {world}) did not reach a collective within the timeout "
        f"({timeout}): hung or dead. This rank ({rank}) is healthy and stops with the timeout error."
    )


def report(line: str | None, exc: BaseException) -> None:
    if not line:
        return
    print(line, file=sys.stderr, flush=True)
    add_note(exc, line)


def on_rank_failure(strategy: Any, exc: BaseException) -> None:
    """Mark ``strategy`` as failed (collectives raise from now on) and name hung ranks after a timeout."""
    from ember.errors import Preempted

    if getattr(strategy, "failed", None) is not None or isinstance(exc, Preempted):
        return  # Preempted: every rank saved together and leaves together (exit status 99), barrier included
    world = strategy.world_size
    if world <= 1:
        return
    if is_timeout(exc) and not isinstance(exc, RankFailedError):
        try:
            report(name_hung_ranks(strategy.global_rank, world, strategy.timeout, exc), exc)
        except Exception:
            pass
    strategy.failed = exc
