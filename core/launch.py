"""Shipping a run between processes: what a launcher that starts worker
processes (``ddp_spawn``, fsdp, deepspeed, ember-xla's spawn) sends to them and
brings back.

Any launcher, built-in or third-party, uses the same public functions:

- :func:`dumps` pickles ``(function, args, ...)`` for the workers (modules the
  trainer's plugin manager holds travel as an import by name);
- in rank zero, :func:`ship_run` packs what the run left behind (the result,
  the module's weights, the :class:`~ember.loops.state.RunState` without
  its loaders and placed module, callback states), and
  :func:`write_shipped_run` writes that into the launcher's work directory;
- back in the calling process, :func:`read_shipped_run` reads it and
  :func:`load_shipped_run` puts it into the trainer, so the caller sees the
  run as if it had happened in its process.
"""

from __future__ import annotations

import io
import os
import pickle
import types
import warnings
from typing import TYPE_CHECKING, Any

from ember.tensors import to_cpu

if TYPE_CHECKING:
    from ember.trainer import Trainer


class _ModulesByName(pickle.Pickler):
    """Pickles module objects (the trainer's plugin manager holds some) as an import by name."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            return _import_module, (obj.__name__,)
        return NotImplemented


def _import_module(name: str) -> types.ModuleType:
    import importlib

    return importlib.import_module(name)


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` (typically ``(trainer._run_stage, args, ...)`` as a bound
    method) for a worker process; modules travel as an import by name."""
    buffer = io.BytesIO()
    _ModulesByName(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def ship_run(trainer: Trainer | None, result: Any) -> dict[str, Any]:
    """What rank zero sends back to the process that called
    fit/validate/test/predict: ``result``, the module's weights, the run's
    end state (a :meth:`~ember.loops.state.RunState.shippable` copy of
    ``trainer.state``) and the callbacks' states."""
    if trainer is None:
        return {"return": to_cpu(result)}
    module = trainer.module
    callbacks = []
    for cb in trainer.callbacks:
        try:
            callbacks.append((type(cb).__name__, cb.state_dict()))
        except Exception:
            callbacks.append((type(cb).__name__, None))
    return {
        "return": to_cpu(result),
        "state_dict": to_cpu(trainer.strategy.module_state_dict(module)) if module is not None else None,
        "run": trainer.state.shippable(to_cpu(dict(trainer.callback_metrics)), dict(trainer.progress_bar_metrics)),
        "callbacks": callbacks,
    }


def load_shipped_run(trainer: Trainer, shipped: dict[str, Any]) -> None:
    """Put what :func:`ship_run` packed into the calling process's ``trainer``
    (weights, metrics, counters, status and callback states)."""
    module = trainer.module
    if module is not None and shipped.get("state_dict") is not None:
        module.load_state_dict(shipped["state_dict"])
    trainer.state.absorb(shipped["run"])
    for cb, (name, state) in zip(trainer.callbacks, shipped.get("callbacks", []), strict=False):
        if state and type(cb).__name__ == name:
            try:
                cb.load_state_dict(state)
            except Exception as exc:  # the weights matter more than a callback's bookkeeping
                warnings.warn(f"ddp_spawn: could not restore {name}'s state in the main process: {exc}", stacklevel=3)


#: the file rank zero's shipped run is written to, in the launcher's work directory
RESULT_FILE = "result.pt"


def write_shipped_run(workdir: str, trainer: Trainer | None, result: Any) -> None:
    """In rank zero: :func:`ship_run`, written whole or not at all (a
    temporary file renamed), into ``workdir``."""
    import torch

    path = os.path.join(workdir, RESULT_FILE)
    torch.save(ship_run(trainer, result), path + ".tmp")
    os.replace(path + ".tmp", path)


def read_shipped_run(workdir: str) -> dict[str, Any] | None:
    """In the launching process: what :func:`write_shipped_run` wrote into
    ``workdir``, or ``None`` when rank zero wrote nothing."""
    import torch

    path = os.path.join(workdir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    # Not a user's file: rank zero of this very run wrote it, into the private
    # directory this launcher made (mkdtemp); the result may be any picklable value.
    return torch.load(path, weights_only=False)
