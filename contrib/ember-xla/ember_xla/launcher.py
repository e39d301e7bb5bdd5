"""The launcher of ``xla_ddp``: hands the run to ``torch_xla.launch``
(``xmp.spawn`` where that does not exist), which starts one replica per local
device; each replica unpickles its own copy of the trainer and runs the stage,
and rank zero's weights, metrics and counters come back to the calling process
through ember's public launch helpers (:mod:`ember.launch`), the ones ember's
own ``ddp_spawn`` uses. It asks of the strategy only public members
(``in_worker``, ``become_replica()``, ``xla``, ``start_method``, ``is_global_zero``).
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.launch import dumps, load_shipped_run, read_shipped_run, write_shipped_run

if TYPE_CHECKING:
    from ember_xla.strategies import XLADDPStrategy


class XLAWorkerError(RuntimeError):
    """A replica of an ``xla_ddp`` run failed; the message says which error."""


def spawn_function(xla: Any) -> Callable[..., Any]:
    """``torch_xla.launch`` (2.6 and later), else ``xmp.spawn``."""
    launch = getattr(xla.torch_xla, "launch", None)
    if callable(launch):
        return launch
    return xla.xmp.spawn


class XLALauncher:
    """Starts the replicas of an ``xla_ddp`` run through torch_xla and brings
    rank zero's results back to the calling process."""

    def __init__(self, strategy: XLADDPStrategy) -> None:
        self.strategy = strategy

    def should_launch(self) -> bool:
        return not self.strategy.in_worker

    def launch(self, function: Callable[..., Any], *args: Any) -> Any:
        # Shipping a trainer to the replicas and its results back: ember's public
        # launch helpers, the ones its own ddp_spawn uses.
        strategy = self.strategy
        trainer = getattr(function, "__self__", None)
        spawn = spawn_function(strategy.xla)
        workdir = tempfile.mkdtemp(prefix="ember-xla-")
        try:
            payload = dumps((function, args))
            try:
                spawn(_replica, args=(payload, workdir), start_method=strategy.start_method)
            except Exception as exc:
                raise XLAWorkerError(f"xla_ddp: a replica failed with {type(exc).__name__}: {exc}") from exc
            shipped = read_shipped_run(workdir)
            if shipped is None:
                raise XLAWorkerError("xla_ddp: the replicas ended without an error, but rank 0 wrote no result.")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if trainer is not None:
            load_shipped_run(trainer, shipped)
        return shipped["return"]


def _replica(index: int, payload: bytes, workdir: str) -> None:
    """What each replica runs (module level, so the spawn start method can import it)."""
    from ember_xla.strategies import XLADDPStrategy

    function, args = pickle.loads(payload)  # per replica: threads of one process get their own copies too
    trainer = getattr(function, "__self__", None)
    strategy = trainer.strategy if trainer is not None else None  # a launched function that is not a trainer's
    if isinstance(strategy, XLADDPStrategy):
        strategy.become_replica()
    result = function(*args)
    if strategy is None or strategy.is_global_zero:
        write_shipped_run(workdir, trainer, result)
