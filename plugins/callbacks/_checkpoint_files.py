"""What ``ModelCheckpoint`` does with files and names: filling the filename
template, checking its directory at set-up, matching restored records to the
files in its own directory, the record kept beside the checkpoints, and
saving under a claimed name (:class:`CheckpointFiles`)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import time
import warnings
from typing import TYPE_CHECKING, Any

from ember.checkpointing import RECORD_FILE, read_record
from ember.plugins.checkpoint_io.torch_io import claiming_names, temp_name, write_error
from ember.suggest import did_you_mean

if TYPE_CHECKING:
    from ember.trainer import Trainer


class MissingMetricError(ValueError):
    """A callback was told to monitor a metric that was never logged."""


def missing_metric_error(owner: str, monitor: str, available: Any) -> MissingMetricError:
    names = sorted(str(n) for n in available)
    listed = ", ".join(repr(n) for n in names) if names else "none"
    return MissingMetricError(
        f"{owner} could not find the monitored metric {monitor!r} in trainer.callback_metrics. "
        f"Available metrics: {listed}.{did_you_mean(monitor, names)} "
        f"Log it from your module with self.log({monitor!r}, value), or change `monitor`."
    )


def has_validation(trainer: Trainer) -> bool:
    """Whether this fit has validation batches to run at all."""
    return any(n > 0 for n in trainer.num_val_batches)


def as_number(value: Any) -> int | float:
    """A logged value (tensor or number) as a Python number."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return float(value)


_FIELD = re.compile(r"\{([^{}:!]+)(![rsa])?(:[^{}]*)?\}")


def fill_template(template: str, metrics: dict[str, Any], auto_insert_metric_name: bool, equals: str, warned: set[str]) -> str:
    """``"{epoch}-{val/acc:.2f}"`` -> ``"epoch=3-val_acc=0.91"``; a field that
    was not logged becomes 0, with one warning per field."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        conversion, spec = match.group(2), (match.group(3) or ":")[1:]
        if key in metrics:
            value: Any = as_number(metrics[key])
        else:
            if key not in warned:
                warned.add(key)
                warnings.warn(
                    f"ModelCheckpoint: the filename template {template!r} names {key!r}, which was not logged; "
                    f"0 is used instead.{did_you_mean(key, [k for k in metrics])}",
                    UserWarning,
                    stacklevel=4,
                )
            value = 0
        if conversion == "!r":
            value = repr(value)
        elif conversion in ("!s", "!a"):
            value = str(value)
        text = format(value, spec)
        if auto_insert_metric_name:
            text = f"{key.replace('/', '_')}{equals}{text}"
        return text

    return _FIELD.sub(replace, template)


def check_writable_dir(directory: str, culprit: str, alternative: str = "") -> None:
    """Fail now, before the first step, when ``directory`` cannot be written:
    it (or the nearest existing folder above it) is not a directory, or a
    file cannot be created in it. ``culprit`` names the setting to change."""
    from ember.plugins.checkpoint_io.torch_io import CheckpointWriteError, temp_name

    path = os.path.abspath(directory)
    existing = path
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    code, reason = 0, ""
    if not os.path.isdir(existing):
        code, reason = errno.ENOTDIR, f"{existing} is not a directory"
    elif existing == path:
        probe = temp_name(path)
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            code, reason = exc.errno or 0, f"a file cannot be created in it ({exc.strerror or exc})"
    elif not os.access(existing, os.W_OK | os.X_OK):
        code, reason = errno.EACCES, f"it cannot be created in {existing} (no write permission, or a read-only file system)"
    if reason:
        error = CheckpointWriteError(
            f"cannot write checkpoints to {directory}: {reason}. Set {culprit} to a writable directory{alternative}."
        )
        error.errno, error.filename = code, directory
        raise error


def match_records(cb: Any, saved_dir: str | None) -> None:
    """Restored records name files where the checkpointed run wrote. This run
    writes to its own ``cb.dirpath`` (its configuration decides, never the
    checkpoint): a record is kept when a file of that name is in this
    directory, re-pointed there; the others are dropped, with a warning."""
    here = os.fspath(cb.dirpath)
    changed = []

    def match(path: str) -> str:
        if not path:
            return ""
        name = os.path.basename(os.fspath(path))
        candidate = os.path.join(here, name)
        kept = candidate if name not in ("", ".", "..") and os.path.isfile(candidate) else ""
        if kept != path:
            changed.append(path)
        return kept

    cb.best_k_models = {m: score for p, score in cb.best_k_models.items() if (m := match(p))}
    cb.recent_model_paths = [m for p in cb.recent_model_paths if (m := match(p))]
    cb.last_model_path = match(cb.last_model_path)
    best = match(cb.best_model_path)
    if best != cb.best_model_path and cb.monitor is not None:
        cb.best_model_score = cb.best_k_models.get(best) if best else None
    cb.best_model_path = best
    if cb.best_k_models and cb.monitor is not None:
        worst = max if cb.mode == "min" else min
        cb.kth_best_model_path = worst(cb.best_k_models, key=lambda p: float(cb.best_k_models[p]))
        cb.kth_value = cb.best_k_models[cb.kth_best_model_path]
        if not cb.best_model_path:
            pick = min if cb.mode == "min" else max
            cb.best_model_path = pick(cb.best_k_models, key=lambda p: float(cb.best_k_models[p]))
            cb.best_model_score = cb.best_k_models[cb.best_model_path]
    else:
        cb.kth_best_model_path, cb.kth_value = "", None
    moved = saved_dir is not None and os.path.abspath(saved_dir) != os.path.abspath(here)
    if moved or changed:
        warnings.warn(
            f"ModelCheckpoint: the checkpoint's records name files in {saved_dir!r}; this run writes to {here!r}, as its own "
            f"configuration says. Records were matched by file name in {here!r}"
            + (f"; {len(changed)} had no file there and were dropped or re-pointed." if changed else "."),
            UserWarning,
            stacklevel=3,
        )


def record_entry(cb: Any) -> dict[str, Any]:
    """What the record beside the checkpoints says about ``cb`` (names relative to its directory)."""
    score = cb.best_model_score
    score = None if score is None else float(score)
    return {
        "monitor": cb.monitor,
        "mode": cb.mode,
        "best_model_path": os.path.basename(cb.best_model_path) if cb.best_model_path else "",
        "best_model_score": None if score is None or math.isnan(score) else score,
        "last_model_path": os.path.basename(cb.last_model_path) if cb.last_model_path else "",
    }


def check_arguments(mode: str, save_top_k: Any, every_n_train_steps: Any, every_n_epochs: Any, dirpath: Any) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"ModelCheckpoint(mode={mode!r}) must be 'min' or 'max'.{did_you_mean(mode, ['min', 'max'])}")
    if not isinstance(save_top_k, int) or save_top_k < -1:
        raise ValueError(f"ModelCheckpoint(save_top_k={save_top_k!r}) must be an int of -1 (keep all) or more.")
    for arg, value in (("every_n_train_steps", every_n_train_steps), ("every_n_epochs", every_n_epochs)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"ModelCheckpoint({arg}={value!r}) must be a non-negative int or None.")
    if every_n_train_steps and every_n_epochs:
        raise ValueError(
            "ModelCheckpoint: every_n_train_steps and every_n_epochs are mutually exclusive; "
            "use two ModelCheckpoint callbacks to save on both schedules."
        )
    if dirpath is not None and os.path.isfile(os.fspath(dirpath)):
        raise ValueError(f"ModelCheckpoint(dirpath={os.fspath(dirpath)!r}) is a file; it must be a directory.")


def score_tensor(value: Any, mode: str) -> Any:
    """A monitored value as a scalar tensor on the CPU, keeping the logged
    dtype (as Lightning's ``best_model_score`` does; a Python number becomes a
    default-dtype tensor); NaN ranks below every real value."""
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().to(device="cpu").reshape(())
    else:
        t = torch.tensor(float(value))
    if torch.isnan(t):
        t = torch.tensor(math.inf if mode == "min" else -math.inf, dtype=t.dtype)
    return t


def rename_record(cb: Any, old: str, new: str) -> None:
    """Every record of ``old`` now names ``new`` (the file was written under another name)."""
    if old in cb.best_k_models:
        cb.best_k_models[new] = cb.best_k_models.pop(old)
    cb.recent_model_paths = [new if p == old else p for p in cb.recent_model_paths]
    for attr in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if getattr(cb, attr) == old:
            setattr(cb, attr, new)


def checkpoint_state(cb: Any) -> dict[str, Any]:
    def f(value: Any) -> float | None:
        return None if value is None else float(value)

    return {
        "monitor": cb.monitor,
        "mode": cb.mode,
        "dirpath": cb.dirpath,
        "best_model_score": f(cb.best_model_score),
        "best_model_path": cb.best_model_path,
        "current_score": f(cb.current_score),
        "best_k_models": {path: float(score) for path, score in cb.best_k_models.items()},
        "kth_best_model_path": cb.kth_best_model_path,
        "kth_value": f(cb.kth_value),
        "last_model_path": cb.last_model_path,
        "recent": list(cb.recent_model_paths),
    }


def load_checkpoint_state(cb: Any, state: dict[str, Any]) -> None:
    import torch

    def t(value: Any) -> Any:
        return None if value is None else torch.tensor(float(value), dtype=torch.float64)

    def path(value: Any) -> str:
        return value if isinstance(value, str) else ""

    cb.best_model_score = t(state.get("best_model_score"))
    cb.best_model_path = path(state.get("best_model_path"))
    cb.current_score = t(state.get("current_score"))
    cb.best_k_models = {p: t(s) for p, s in (state.get("best_k_models") or {}).items() if isinstance(p, str)}
    cb.kth_best_model_path = path(state.get("kth_best_model_path"))
    cb.kth_value = t(state.get("kth_value"))
    cb.last_model_path = path(state.get("last_model_path"))
    cb.recent_model_paths = [p for p in state.get("recent") or [] if isinstance(p, str)]


class CheckpointFiles:
    """``ModelCheckpoint``'s file operations: names, claims, saves, removals."""

    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None) -> str:
        """The path a checkpoint with these ``metrics`` gets, e.g.
        ``{dirpath}/epoch=3-step=120.ckpt``."""
        template = filename if filename is not None else self.filename
        if template is None:
            template = "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        name = fill_template(template, metrics, self.auto_insert_metric_name, self.CHECKPOINT_EQUALS_CHAR, self._warned_missing_fields)
        if ver is not None:
            name = f"{name}{self.CHECKPOINT_JOIN_CHAR}v{ver}"
        return os.path.join(self.dirpath or "", name + self.FILE_EXTENSION)

    def _free_path(self, filepath: str, reusable: str | None = None) -> str:
        """``filepath``, or ``...-v1.ckpt`` etc. when a file of that name exists
        that this instance may not overwrite."""
        if not self.enable_version_counter or filepath == reusable or filepath in self._written or not os.path.exists(filepath):
            return filepath
        return self._next_free(filepath, reusable)

    def _next_free(self, filepath: str, reusable: str | None = None) -> str:
        base = self._base_names.get(filepath, filepath)
        stem = base[: -len(self.FILE_EXTENSION)]
        ver = self.STARTING_VERSION
        while True:
            candidate = f"{stem}{self.CHECKPOINT_JOIN_CHAR}v{ver}{self.FILE_EXTENSION}"
            if candidate != filepath and (candidate == reusable or candidate in self._written or not os.path.exists(candidate)):
                self._base_names[candidate] = base
                return candidate
            ver += 1

    def _save_checkpoint(self, trainer: Trainer, filepath: str, reusable: str | None = None) -> None:
        self._last_global_step_saved = trainer.global_step
        strategy = trainer.strategy
        several = trainer.world_size > 1
        if several:
            # Rank zero looked at the files; every rank must use the name it chose.
            agreed = strategy.broadcast(filepath, 0)
            if agreed != filepath:
                rename_record(self, filepath, agreed)
                filepath = agreed
        if filepath == reusable or filepath in self._written or not self.enable_version_counter:
            trainer.save_checkpoint(filepath, weights_only=self.save_weights_only)  # ours (or asked to overwrite): replaced atomically
        else:
            # Not ours: claimed atomically, so a concurrent run's file of that name is never replaced.
            with claiming_names(filepath, lambda taken: self._next_free(taken, reusable)) as claim:
                trainer.save_checkpoint(filepath, weights_only=self.save_weights_only)
            claimed = claim.path or filepath
            if several:
                claimed = strategy.broadcast(claimed, 0)
            if claimed != filepath:
                rename_record(self, filepath, claimed)
                filepath = claimed
        self._written.add(filepath)
        if trainer.is_global_zero and self.dirpath:
            write_record(self.dirpath, self.state_key, record_entry(self))

    def _remove(self, trainer: Trainer, filepath: str) -> None:
        if filepath not in self._written:
            return  # not ours (an earlier run's, or the user's): leave it
        if filepath in self.best_k_models or filepath in self.recent_model_paths or filepath in (self.best_model_path, self.last_model_path):
            return  # still referenced
        self._written.discard(filepath)
        trainer.strategy.remove_checkpoint(filepath)


def write_record(directory: str, key: str, entry: dict[str, Any]) -> None:
    """Update ``entry`` (file names relative to ``directory``) under ``key`` in
    the directory's record, atomically (a temporary file renamed over it)."""
    path = os.path.join(directory, RECORD_FILE)
    record = read_record(directory) or {"format": 1, "callbacks": {}}
    record["callbacks"][key] = {**entry, "updated": time.time()}
    tmp = temp_name(directory)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(exc, path) from None
        raise
