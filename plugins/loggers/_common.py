"""Helpers shared by the loggers that write to an external library.

Nothing here imports a vendor library: the logger modules import theirs only
when a logger is first used.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

from ember.callback import Logger
from ember.plugins.loggers.versions import claim_version, version_dirname, version_from_checkpoint

_MISSING = object()


def require(module: str, logger: str, extra: str) -> None:
    """Fail early, at construction, when the vendor library is not installed.

    Only looks the module up (``importlib.util.find_spec``); importing it is
    left for the first time the logger writes.
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        found = False
    if not found:
        raise ModuleNotFoundError(
            f"{logger} needs the {module!r} package, which is not installed. Install it with `pip install 'ember[{extra}]'`.",
            name=module,
        )


def params_dict(params: Any) -> dict[str, Any]:
    """Hyperparameters as a plain dict (``None``, mappings and namespaces accepted)."""
    if params is None:
        return {}
    if isinstance(params, Mapping):
        return dict(params)
    if hasattr(params, "__dict__"):
        return dict(vars(params))
    return dict(params)


def flatten(params: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """``{"opt": {"lr": 0.1}}`` becomes ``{"opt/lr": 0.1}``; namespaces count as mappings."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
            value = vars(value)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, sep, name))
        else:
            out[name] = value
    return out


def scalar(value: Any) -> bool | int | float | str:
    """A value a scalar-only store accepts: numbers and strings as they are,
    0-dim tensors and numpy scalars as numbers, everything else as its text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "None"
    item = getattr(value, "item", None)
    if callable(item):
        try:
            numel = getattr(value, "numel", None) or getattr(value, "size", None)
            count = numel() if callable(numel) else numel
            if count in (None, 1):
                result = item()
                if isinstance(result, (bool, int, float)):
                    return result
        except Exception:
            pass
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return str(value)


class SameStepFilter:
    """Drops a metric already logged at the same step with the same value.

    The kernel adds ``epoch`` to every batch of metrics, so when a step-level
    log, a validation's aggregates and a training epoch's aggregates all land
    on one global step, ``epoch`` arrives up to three times at that step.
    Append-only stores (TensorBoard events, MLflow histories) would keep every
    copy; this keeps the first. A different value at the same step is still
    written: that is new information, not a repeat.
    """

    __slots__ = ("_step", "_seen")

    def __init__(self) -> None:
        self._step: int | None = None
        self._seen: dict[str, Any] = {}

    def __call__(self, metrics: Mapping[str, Any], step: int) -> dict[str, Any]:
        if step != self._step:
            self._step = step
            self._seen = dict(metrics)
            return dict(metrics)
        seen = self._seen
        fresh = {k: v for k, v in metrics.items() if seen.get(k, _MISSING) != v}
        seen.update(fresh)
        return fresh


def checkpoint_step(checkpoint: Mapping[str, Any]) -> int | None:
    """The global step a checkpoint was taken at."""
    loop = checkpoint.get("loops", {}).get("fit", {}) if isinstance(checkpoint.get("loops"), Mapping) else {}
    step = loop.get("global_step", checkpoint.get("global_step"))
    return None if step is None else int(step)


class VersionedLogger(Logger):
    """A logger writing to ``{save_dir}/{name}/version_{N}``, with ``N`` claimed
    atomically (:func:`~ember.plugins.loggers.versions.claim_version`) unless
    given. Subclasses set ``_save_dir``, ``_name``, ``_version`` and
    ``_configured_version`` (the ``version`` argument) in ``__init__``."""

    _save_dir: str
    _name: str
    _version: int | str | None
    _configured_version: int | str | None = None
    _claimed: str | None = None  # the directory this logger created by claiming a number

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = claim_version(self.root_dir)
            self._claimed = os.path.join(self.root_dir, version_dirname(self._version))
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``{save_dir}/{name}``: the parent of every version of this experiment."""
        return os.path.join(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:
        """``{root_dir}/version_{N}``, where this run's files go."""
        return os.path.join(self.root_dir, version_dirname(self.version))

    def _adopt_saved_version(self, saved: object) -> bool:
        """Go on in the run directory a checkpoint names, when this run's
        configuration allows it (see :func:`version_from_checkpoint`); True
        when the version changed. A directory claimed before the restore and
        still empty is removed."""
        version = version_from_checkpoint(type(self).__name__, self.root_dir, self._configured_version, saved)
        if version is None or version == self._version:
            return False
        if self._claimed is not None:
            try:
                os.rmdir(self._claimed)
            except OSError:
                pass  # something was written there: keep it
            self._claimed = None
        self._version = version
        return True
