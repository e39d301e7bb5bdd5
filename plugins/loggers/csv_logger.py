"""``CSVLogger``: metrics to a CSV file, hyperparameters to JSON, no extra dependency.

Layout::

    {save_dir}/{name}/version_{N}/metrics.csv
    {save_dir}/{name}/version_{N}/hparams.json

``log_metrics`` only stores the values; they are written every
``flush_logs_every_n_steps`` rows, at the first logging call ``flush_secs``
after the last write, and when the logger is saved or finalized (also when
the run fails or is interrupted). A process killed outright (SIGKILL) loses
at most the rows since the last write: fewer than
``flush_logs_every_n_steps``, all logged within ``flush_secs`` plus one
logging interval of the kill.
When a metric name appears that the file's header does not have yet, the file
is rewritten once with the wider header, so it always stays a valid CSV that
``csv.DictReader`` reads.
"""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from collections import Counter
from typing import Any

from ember.hparams import json_default
from ember.plugin_manager import hookimpl
from ember.plugins.loggers._common import VersionedLogger, checkpoint_step

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.json"
SUPERSEDED_FILE = "superseded.csv"


def _to_float(value: Any) -> Any:
    if isinstance(value, (int, float, str)) or value is None:
        return value
    try:
        return float(value)  # 0-dim tensors, numpy scalars
    except (TypeError, ValueError):
        return value


class CSVLogger(VersionedLogger):
    """Log metrics to ``{save_dir}/{name}/version_{N}/metrics.csv``.

    :param save_dir: parent directory of all experiments.
    :param name: experiment name (a sub-directory of ``save_dir``).
    :param version: an ``int`` gives ``version_{version}``, a ``str`` is used as
        the directory name as it is; ``None`` picks the next free
        ``version_N``.
    :param flush_logs_every_n_steps: how many logged rows to keep in memory
        before writing them out.
    :param flush_secs: rows are also written at the first logging call this
        many seconds after the last write (``None``: by count only).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] = ".",
        name: str = "ember_logs",
        version: int | str | None = None,
        flush_logs_every_n_steps: int = 100,
        flush_secs: float | None = 5.0,
        prefix: str = "",
    ) -> None:
        self.prefix = prefix
        if flush_logs_every_n_steps < 1:
            raise ValueError(f"CSVLogger(flush_logs_every_n_steps={flush_logs_every_n_steps}) must be at least 1.")
        if flush_secs is not None and flush_secs < 0:
            raise ValueError(f"CSVLogger(flush_secs={flush_secs}) must be >= 0, or None to write by count only.")
        self._flush_secs = flush_secs
        self._last_write = time.monotonic()
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._configured_version = version
        self._flush_every = int(flush_logs_every_n_steps)
        self._rows: list[tuple[int, dict[str, Any]]] = []
        self._keys: list[str] = []  # metric columns already in the file on disk
        self._file_checked = False  # have we looked at what is on disk yet?
        self._resumed = False
        self._hparams: dict[str, Any] = {}
        self._resume_step: int | None = None  # a resumed fit: the checkpoint's global step
        self._at_resume_step: Counter[frozenset[str]] = Counter()  # metric-name sets the file has at that step

    @property
    def metrics_file_path(self) -> str:
        return os.path.join(self.log_dir, METRICS_FILE)

    @property
    def experiment(self) -> CSVLogger:
        return self

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._resume_step is not None and step <= self._resume_step:
            if step < self._resume_step:
                return  # the file has everything before the checkpoint
            names = frozenset(metrics)
            if self._at_resume_step[names] > 0:
                self._at_resume_step[names] -= 1
                return  # a row at the checkpoint's step the file already has (an epoch end redone)
        self._rows.append((step, dict(metrics)))
        if len(self._rows) >= self._flush_every or (
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
            json.dump(self._hparams, fh, indent=2, sort_keys=True, default=json_default)
            fh.write("\n")
        os.replace(tmp, path)

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    def save(self) -> None:
        """Write the buffered rows to ``metrics.csv``."""
        self._last_write = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        os.makedirs(self.log_dir, exist_ok=True)
        path = self.metrics_file_path
        if not self._file_checked:
            self._adopt_existing_file(path)
        new_keys: list[str] = []
        known = set(self._keys)
        for _, metrics in rows:
            for key in metrics:
                if key not in known:
                    known.add(key)
                    new_keys.append(key)
        if new_keys or not os.path.exists(path):
            self._keys.extend(new_keys)
            self._rewrite(path, [{"step": step, **{k: _to_float(v) for k, v in metrics.items()}} for step, metrics in rows])
        else:
            # Rows as lists in the header's order (what DictWriter would write, an
            # empty cell for a metric a row lacks), without a dict per row.
            keys = self._keys
            with open(path, "a", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([step, *[_to_float(m[k]) if k in m else "" for k in keys]] for step, m in rows)

    def _adopt_existing_file(self, path: str) -> None:
        """A file from an earlier run of this version: keep it and append."""
        self._file_checked = True
        if not os.path.exists(path):
            return
        if not self._resumed:
            warnings.warn(
                f"CSVLogger: {path} already exists; new rows are appended to it. Pass version=None for a fresh directory.",
                UserWarning,
                stacklevel=3,
            )
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
        if header:
            self._keys = [k for k in header if k != "step"]

    def _rewrite(self, path: str, new_records: list[dict[str, Any]]) -> None:
        old: list[dict[str, Any]] = []
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as fh:
                old = list(csv.DictReader(fh))
        tmp = path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["step", *self._keys], restval="")
            writer.writeheader()
            writer.writerows(old)
            writer.writerows(new_records)
        os.replace(tmp, path)

    def finalize(self, status: str) -> None:
        self.save()

    # ------------------------------------------------------------------ resume
    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        # A new run; only a checkpoint loaded after this makes it a resumed one.
        self._resume_step, self._at_resume_step = None, Counter()

    def on_load_checkpoint(self, trainer: Any, module: Any, checkpoint: dict[str, Any]) -> None:
        """A resumed fit continues the file as one history: rows the
        interrupted run wrote after the checkpoint's step are moved to
        ``superseded.csv`` beside it (kept, not deleted), because the resumed
        run logs those steps again."""
        step = checkpoint_step(checkpoint)
        if step is None or not trainer.is_global_zero:
            return
        self.save()
        self._resume_step, self._at_resume_step = step, Counter()
        path = self.metrics_file_path
        if not os.path.exists(path):
            return
        self._file_checked = True
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header, rows = list(reader.fieldnames or []), list(reader)
        keep, later = [], []
        for row in rows:
            try:
                row_step = int(float(row.get("step") or ""))
            except ValueError:
                continue  # a row cut short by a killed process
            (later if row_step > step else keep).append(row)
            if row_step == step:
                self._at_resume_step[frozenset(k for k, v in row.items() if k != "step" and v not in ("", None))] += 1
        self._keys = [k for k in header if k != "step"]
        if not later and len(keep) == len(rows):
            return
        if later:
            superseded = os.path.join(self.log_dir, SUPERSEDED_FILE)
            new = not os.path.exists(superseded)
            with open(superseded, "a", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=header, restval="", extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerows(later)
        tmp = path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=header, restval="")
            writer.writeheader()
            writer.writerows(keep)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"version": self.version}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("version")
        if self._adopt_saved_version(saved):
            self._file_checked = False
            self._keys = []
        if saved is not None and saved == self._version:
            self._resumed = True  # the same run goes on: appending to its file is expected

    def __repr__(self) -> str:
        return f"CSVLogger(save_dir={self._save_dir!r}, name={self._name!r}, version={self._version!r})"


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("logger", "csv", CSVLogger)
