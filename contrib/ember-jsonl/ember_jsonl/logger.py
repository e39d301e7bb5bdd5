"""``JSONLinesLogger``: one JSON object per ``log_metrics`` call, appended to a file.

Layout::

    {save_dir}/{name}/version_{N}/metrics.jsonl    {"step": 12, "metrics": {"loss": 0.31, "epoch": 1.0}, "time": 1718000000.5}
    {save_dir}/{name}/version_{N}/hparams.json     the module's (and DataModule's) hyperparameters

Records are kept in memory and appended every ``flush_every`` records, at the
first record ``flush_secs`` after the last write, when a checkpoint is
written (so that everything logged before a checkpoint is on disk with it)
and when the run ends, also when it fails. A process killed outright
(SIGKILL) loses at most the records since the last write: fewer than
``flush_every``, all logged within ``flush_secs`` plus one logging interval
of the kill.

Resuming: the logger's state in a checkpoint is its version, so a ``fit``
resumed from that checkpoint writes to the same file. When the checkpoint is
loaded (``on_load_checkpoint``) the logger learns its ``global_step`` ``S``:

* records already in the file with ``step > S`` belong to the abandoned
  continuation of the run; they are moved to ``superseded.jsonl`` next to it,
  so that the file reads as one history and nothing is deleted;
* new records with ``step < S`` are skipped (the file has them), and so is a new
  record at ``step == S`` whose metric names a record at ``S`` in the file
  already has (the loop may repeat an epoch's end after resuming there).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any

import ember
from ember.plugins.loggers.versions import claim_version, version_dirname, version_from_checkpoint

if TYPE_CHECKING:
    from ember import Module, Trainer

__all__ = ["HPARAMS_FILE", "METRICS_FILE", "SUPERSEDED_FILE", "JSONLinesLogger", "read_run"]

METRICS_FILE = "metrics.jsonl"
HPARAMS_FILE = "hparams.json"
SUPERSEDED_FILE = "superseded.jsonl"


def _number(value: Any) -> Any:
    """A metric value as something ``json`` writes: ints and floats stay, tensors
    and numpy scalars become floats, anything else its ``str``."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _json_default(value: Any) -> Any:
    """Hyperparameters that ``json`` cannot write on its own."""
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        try:
            return value.tolist()
        except Exception:
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if type(value).__name__ == "Namespace" and hasattr(value, "__dict__"):
        return vars(value)
    return repr(value)


def read_run(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a run, in the order they were written.

    :param path: a ``metrics.jsonl`` file, or the version directory holding one.
    :returns: one dict per line: ``{"step": int, "metrics": {name: value}, "time": float}``.

    A last line cut short (the process was killed while writing it) is
    ignored; a malformed line anywhere else raises ``ValueError`` naming it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    records: list[dict[str, Any]] = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == last and not lines[i].endswith("}"):
                break  # an interrupted final write
            raise ValueError(f"{path}:{i + 1}: not a JSON record: {exc}") from None
    return records


class JSONLinesLogger(ember.Logger):
    """Log metrics to ``{save_dir}/{name}/version_{N}/metrics.jsonl``.

    :param save_dir: parent directory of all experiments.
    :param name: experiment name (a sub-directory of ``save_dir``).
    :param version: an ``int`` gives ``version_{version}``, a ``str`` is used as
        the directory name as it is; ``None`` claims the next free ``version_N``
        (atomically: two runs never share one). A resumed ``fit`` goes on in
        the version its checkpoint saved when that is a run directory under
        this logger's own ``{save_dir}/{name}`` and no other version is
        configured; a saved absolute or ``..`` path is never followed.
    :param flush_every: how many records to keep in memory before appending
        them to the file.
    :param flush_secs: records are also appended at the first record this
        many seconds after the last write (``None``: by count only).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] = ".",
        name: str = "ember_logs",
        version: int | str | None = None,
        flush_every: int = 50,
        flush_secs: float | None = 5.0,
    ) -> None:
        if int(flush_every) != flush_every or flush_every < 1:
            raise ValueError(f"JSONLinesLogger(flush_every={flush_every!r}) must be a positive integer.")
        if flush_secs is not None and flush_secs < 0:
            raise ValueError(f"JSONLinesLogger(flush_secs={flush_secs!r}) must be >= 0, or None to write by count only.")
        self._flush_secs = flush_secs
        self._last_write = time.monotonic()
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._configured_version = version
        self._claimed: str | None = None  # the directory this logger created by claiming a number
        self._flush_every = int(flush_every)
        self._buffer: list[str] = []
        self._hparams: dict[str, Any] = {}
        self._resumed = False  # the version came from a checkpoint
        self._checked_existing = False  # looked at a file left by an earlier run?
        self._resume_step: int | None = None
        self._at_resume_step: Counter[frozenset[str]] = Counter()  # metric-name sets the file has at the resume step

    # ------------------------------------------------------------------ identity
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
        """``{root_dir}/version_{N}``: where this run's files go."""
        return os.path.join(self.root_dir, version_dirname(self.version))

    @property
    def metrics_file_path(self) -> str:
        return os.path.join(self.log_dir, METRICS_FILE)

    @property
    def experiment(self) -> JSONLinesLogger:
        return self

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        step = int(step)
        if self._resume_step is not None and step <= self._resume_step:
            if step < self._resume_step:
                return  # the file already has everything before the checkpoint
            names = frozenset(metrics)
            if self._at_resume_step[names] > 0:
                self._at_resume_step[names] -= 1
                return  # this record at the checkpoint's step is in the file already
        record = {"step": step, "metrics": {str(k): _number(v) for k, v in metrics.items()}, "time": time.time()}
        self._buffer.append(json.dumps(record))
        if len(self._buffer) >= self._flush_every or (
            self._flush_secs is not None and time.monotonic() - self._last_write >= self._flush_secs
        ):
            self.save()

    def log_hyperparams(self, params: dict[str, Any] | Any) -> None:
        if params is None:
            return
        if not isinstance(params, dict):
            params = vars(params) if hasattr(params, "__dict__") else dict(params)
        self._hparams.update(params)
        os.makedirs(self.log_dir, exist_ok=True)
        path = os.path.join(self.log_dir, HPARAMS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self._hparams, fh, indent=2, sort_keys=True, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)

    def save(self) -> None:
        """Append the buffered records to ``metrics.jsonl``."""
        self._last_write = time.monotonic()
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        os.makedirs(self.log_dir, exist_ok=True)
        path = self.metrics_file_path
        if not self._checked_existing:
            self._checked_existing = True
            if os.path.exists(path) and not self._resumed:
                warnings.warn(
                    f"JSONLinesLogger: {path} already exists; new records are appended to it. Pass version=None for a fresh directory.",
                    UserWarning,
                    stacklevel=2,
                )
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def finalize(self, status: str) -> None:
        self.save()

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        # A new run: only a checkpoint loaded after this (on_load_checkpoint) makes it a resumption.
        self._resume_step = None
        self._at_resume_step = Counter()

    def on_save_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
        # Everything logged before a checkpoint is on disk when it is written.
        if trainer.is_global_zero:
            self.save()

    def on_load_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
        step = checkpoint.get("global_step")
        if step is None or not trainer.is_global_zero:
            return
        self._resume_step = int(step)
        self._at_resume_step = Counter()
        self.save()  # anything logged before the restore goes to the file first
        self._trim_after(self._resume_step)

    def _trim_after(self, step: int) -> None:
        """Move records after ``step`` out of the metrics file (into
        ``superseded.jsonl``) and note which records the file has at ``step``."""
        path = self.metrics_file_path
        if not os.path.exists(path):
            return
        self._checked_existing = True
        with open(path, encoding="utf-8") as fh:
            lines = [line for line in fh.read().split("\n") if line.strip()]
        keep: list[str] = []
        later: list[str] = []
        for line in lines:
            try:
                record = json.loads(line)
                record_step = int(record["step"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by a killed process
            if record_step > step:
                later.append(line)
            else:
                keep.append(line)
                if record_step == step:
                    self._at_resume_step[frozenset(record.get("metrics", {}))] += 1
        if len(keep) == len(lines):
            return
        if later:
            with open(os.path.join(self.log_dir, SUPERSEDED_FILE), "a", encoding="utf-8") as fh:
                fh.write("\n".join(later) + "\n")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"version": self.version}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("version")
        version = version_from_checkpoint("JSONLinesLogger", self.root_dir, self._configured_version, saved)
        if version is None or version == self._version:
            self._resumed = self._resumed or (saved is not None and saved == self._version)
            return
        if self._claimed is not None:  # claimed before the restore: give it back if still empty
            try:
                os.rmdir(self._claimed)
            except OSError:
                pass
            self._claimed = None
        self._checked_existing = False
        self._version = version
        self._resumed = True

    def __repr__(self) -> str:
        return f"JSONLinesLogger(save_dir={self._save_dir!r}, name={self._name!r}, version={self._version!r})"
