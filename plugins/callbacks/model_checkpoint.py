"""``ModelCheckpoint``: save checkpoints during ``fit``, keeping the best (or latest) few.

When it saves:

* at the end of every validation run of ``fit`` (never during the sanity
  check), when ``save_on_train_epoch_end`` is not ``True``;
* at the end of a training epoch in which no validation ran (or always with
  ``save_on_train_epoch_end=True``; never with ``False``);
* every ``every_n_train_steps`` optimizer steps, from ``on_train_batch_end``,
  when that is set; the top-k files are then not saved at epoch ends (give
  a second ``ModelCheckpoint`` to have both schedules).

What it keeps: with ``monitor``, the ``save_top_k`` best checkpoints by
``mode`` (``-1``: all of them, ``0``: none); without ``monitor``, the latest
``save_top_k``. ``save_last=True`` also keeps ``last.ckpt`` up to date.

It deletes only files it wrote itself during the current run, and only after
the file replacing them was written.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.roles import did_you_mean

if TYPE_CHECKING:
    import torch

    from ember.module import Module
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


def has_validation(trainer: Any) -> bool:
    """Whether this fit has validation batches to run at all."""
    n = getattr(trainer, "num_val_batches", 0)
    values = n if isinstance(n, (list, tuple)) else [n]
    for v in values:
        try:
            if float(v or 0) > 0:
                return True
        except (TypeError, ValueError):
            continue
    return False


def as_number(value: Any) -> int | float:
    """A logged value (tensor or number) as a Python number."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return float(value)


def _state_stage(trainer: Any) -> tuple[Any, bool]:
    state = getattr(trainer, "state", None)
    return getattr(state, "fn", None), bool(getattr(trainer, "sanity_checking", False))


_FIELD = re.compile(r"\{([^{}:!]+)(![rsa])?(:[^{}]*)?\}")


class ModelCheckpoint(Callback):
    """Save checkpoints while fitting; see the module docstring for when.

    :param dirpath: directory for the files; default ``{trainer.log_dir}/checkpoints``.
    :param filename: template such as ``"{epoch}-{val_loss:.2f}"``, filled from
        ``epoch``, ``step`` and ``trainer.callback_metrics``; default ``"{epoch}-{step}"``.
    :param monitor: metric to rank checkpoints by; ``None`` keeps the latest ones.
    :param mode: ``"min"`` or ``"max"``: which direction is better.
    :param save_top_k: how many to keep; ``-1`` all, ``0`` none (``last.ckpt`` aside).
    :param save_last: also keep ``last.ckpt`` with the latest state.
    :param every_n_train_steps: save every that many optimizer steps instead of at epoch ends.
    :param every_n_epochs: save at the end of every that many epochs (default 1).
    :param save_weights_only: write only the module's weights.
    :param save_on_train_epoch_end: ``True``: save at train-epoch end; ``False``:
        at validation end only; ``None``: at validation end when validation ran
        in the epoch, else at the end of the training epoch.
    :param verbose: print a line for every decision.
    :param auto_insert_metric_name: ``"{epoch}"`` becomes ``epoch=3`` in the name.
    """

    fills = "model_checkpoint"

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int = 1,
        save_last: bool | None = None,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        save_weights_only: bool = False,
        save_on_train_epoch_end: bool | None = None,
        verbose: bool = False,
        auto_insert_metric_name: bool = True,
    ) -> None:
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
        if filename is not None and filename.endswith(self.FILE_EXTENSION):
            filename = filename[: -len(self.FILE_EXTENSION)]

        self._user_dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.dirpath: str | None = self._user_dirpath
        self.filename = filename
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.save_weights_only = save_weights_only
        self.verbose = verbose
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        if every_n_train_steps is None and every_n_epochs is None:
            self._every_n_train_steps, self._every_n_epochs = 0, 1
        else:
            self._every_n_train_steps = every_n_train_steps or 0
            self._every_n_epochs = every_n_epochs or 0

        # What a checkpoint remembers.
        self.best_k_models: dict[str, torch.Tensor] = {}
        self.kth_best_model_path = ""
        self.kth_value: torch.Tensor | None = None
        self.best_model_score: torch.Tensor | None = None
        self.best_model_path = ""
        self.last_model_path = ""
        self.current_score: torch.Tensor | None = None
        self._recent: list[str] = []  # without a monitor: latest first-in, first-out

        # This run only.
        self._written: set[str] = set()
        self._last_global_step_saved = -1
        self._validated_epoch = -1
        self._epoch_end_done = -1
        self._validation_ran = False
        self._warned_missing_fields: set[str] = set()
        self._dir_resolved = False  # setup() has fixed self.dirpath for the current run
        self._restored_dir: str | None = None  # dirpath from a checkpoint loaded before setup()

    # ------------------------------------------------------------------ identity
    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @property
    def every_n_train_steps(self) -> int:
        return self._every_n_train_steps

    @property
    def every_n_epochs(self) -> int:
        return self._every_n_epochs

    def __repr__(self) -> str:
        return f"ModelCheckpoint(dirpath={self.dirpath!r}, monitor={self.monitor!r}, mode={self.mode!r}, save_top_k={self.save_top_k})"

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if self._user_dirpath is not None:
            dirpath = self._user_dirpath
        else:
            base = getattr(trainer, "log_dir", None) or getattr(trainer, "default_root_dir", None) or os.getcwd()
            dirpath = os.path.join(os.fspath(base), "checkpoints")
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and getattr(trainer, "world_size", 1) > 1:
            dirpath = strategy.broadcast(dirpath)
        self.dirpath = dirpath
        self._dir_resolved = True
        if self._restored_dir is not None:
            saved, self._restored_dir = self._restored_dir, None
            self._reconcile_dirpath(saved)
        if stage == "fit":
            self._written = set()
            self._last_global_step_saved = -1
            self._validated_epoch = -1
            self._epoch_end_done = -1
            self._validation_ran = False

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._dir_resolved = False

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = self._every_n_train_steps
        if n < 1:
            return
        step = trainer.global_step
        if step == 0 or step % n != 0 or self._should_skip(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk(trainer, candidates, may_defer=True)
        self._save_last(trainer, candidates)

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        fn, sanity = _state_stage(trainer)
        if sanity or fn != "fit":
            return
        self._validation_ran = True
        epoch = trainer.current_epoch
        self._validated_epoch = epoch
        if self._save_on_train_epoch_end is True or self._should_skip(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self._save_on_train_epoch_end is None and self.monitor is not None and self.monitor not in candidates:
            # Perhaps a training-epoch metric, reduced once the epoch ends:
            # decide at on_train_epoch_end (which raises if it is still missing).
            return
        self._epoch_end_done = epoch
        self._save_on_schedule(trainer, candidates)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if self._save_on_train_epoch_end is False or self._should_skip(trainer):
            return
        epoch = trainer.current_epoch
        if self._save_on_train_epoch_end is None:
            if self._epoch_end_done == epoch:
                return
            validated_now = self._validated_epoch == epoch
            if not validated_now and self.monitor is not None and (self._validation_ran or has_validation(trainer)):
                return  # validation will bring a fresh value; don't rank on a stale one
        self._epoch_end_done = epoch
        self._save_on_schedule(trainer, self._monitor_candidates(trainer))

    # ------------------------------------------------------------------ decisions
    def _should_skip(self, trainer: Trainer) -> bool:
        fn, sanity = _state_stage(trainer)
        return sanity or fn != "fit" or bool(getattr(trainer, "fast_dev_run", False)) or trainer.global_step == self._last_global_step_saved

    def _save_on_schedule(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        n = self._every_n_epochs
        if n >= 1 and (trainer.current_epoch + 1) % n == 0:
            self._save_topk(trainer, candidates)
        self._save_last(trainer, candidates)

    def _monitor_candidates(self, trainer: Trainer) -> dict[str, Any]:
        candidates = dict(getattr(trainer, "callback_metrics", {}) or {})
        candidates["epoch"] = trainer.current_epoch
        candidates["step"] = trainer.global_step
        return candidates

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _score(self, value: Any) -> torch.Tensor:
        import torch

        if isinstance(value, torch.Tensor):
            t = value.detach().to(device="cpu", dtype=torch.float64).reshape(())
        else:
            t = torch.tensor(float(value), dtype=torch.float64)
        if torch.isnan(t):  # NaN never ranks above a real value
            t = torch.tensor(math.inf if self.mode == "min" else -math.inf, dtype=torch.float64)
        return t

    def check_monitor_top_k(self, trainer: Trainer, current: torch.Tensor | None = None) -> bool:
        """Whether ``current`` earns a place in the top ``save_top_k``."""
        if current is None or self.save_top_k == 0:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        worst = self.best_k_models[self.kth_best_model_path]
        return self._better(float(current), float(worst))

    def _save_topk(self, trainer: Trainer, candidates: dict[str, Any], may_defer: bool = False) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._save_latest(trainer, candidates)
            return
        if self.monitor not in candidates:
            if may_defer and not self._validation_ran and has_validation(trainer):
                # A validation metric before the first validation: nothing to rank yet.
                return
            raise missing_metric_error(
                f"ModelCheckpoint(monitor={self.monitor!r})", self.monitor, getattr(trainer, "callback_metrics", {}) or {}
            )
        current = self._score(candidates[self.monitor])
        if self.check_monitor_top_k(trainer, current):
            self._update_best_and_save(trainer, current, candidates)
        elif self.verbose:
            self._say(
                trainer, f"epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor!r} was not in the top {self.save_top_k}"
            )

    def _update_best_and_save(self, trainer: Trainer, current: torch.Tensor, candidates: dict[str, Any]) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        dropped = None
        if len(self.best_k_models) >= k and self.kth_best_model_path:
            dropped = self.kth_best_model_path
            self.best_k_models.pop(dropped)
        filepath = self._free_path(self.format_checkpoint_name(candidates), reusable=dropped)

        self.current_score = current
        self.best_k_models[filepath] = current
        pick = min if self.mode == "min" else max
        worst = max if self.mode == "min" else min
        self.kth_best_model_path = worst(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
        self.kth_value = self.best_k_models[self.kth_best_model_path]
        self.best_model_path = pick(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            self._say(
                trainer,
                f"epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor!r} reached "
                f"{float(current):.5g} (best {float(self.best_model_score):.5g}), saving model to {filepath!r} as top {k}",
            )
        self._save_checkpoint(trainer, filepath)
        if dropped is not None and dropped != filepath:
            self._remove(trainer, dropped)

    def _save_latest(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        k = self.save_top_k
        reusable = self._recent[0] if k > 0 and len(self._recent) >= k else None
        filepath = self._free_path(self.format_checkpoint_name(candidates), reusable=reusable)
        if filepath in self._recent:
            self._recent.remove(filepath)
        self._recent.append(filepath)
        dropped: list[str] = []
        while k != -1 and len(self._recent) > k:
            dropped.append(self._recent.pop(0))
        self.best_model_path = filepath
        if self.verbose:
            self._say(trainer, f"epoch {trainer.current_epoch}, step {trainer.global_step}: saving model to {filepath!r}")
        self._save_checkpoint(trainer, filepath)
        for path in dropped:
            if path != filepath:
                self._remove(trainer, path)

    def _save_last(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        if not self.save_last:
            return
        previous = self.last_model_path
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        filepath = self._free_path(filepath, reusable=previous or None)
        self.last_model_path = filepath
        self._save_checkpoint(trainer, filepath)
        if previous and previous != filepath:
            self._remove(trainer, previous)

    # ------------------------------------------------------------------ files
    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None) -> str:
        """The path a checkpoint with these ``metrics`` gets, e.g.
        ``{dirpath}/epoch=3-step=120.ckpt``."""
        template = filename if filename is not None else self.filename
        if template is None:
            template = "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        name = self._fill(template, metrics)
        if ver is not None:
            name = f"{name}{self.CHECKPOINT_JOIN_CHAR}v{ver}"
        return os.path.join(self.dirpath or "", name + self.FILE_EXTENSION)

    def _fill(self, template: str, metrics: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            key = match.group(1).strip()
            conversion, spec = match.group(2), (match.group(3) or ":")[1:]
            if key in metrics:
                value: Any = as_number(metrics[key])
            else:
                if key not in self._warned_missing_fields:
                    self._warned_missing_fields.add(key)
                    warnings.warn(
                        f"ModelCheckpoint: the filename template {template!r} names {key!r}, which was not logged; "
                        f"0 is used instead.{did_you_mean(key, [k for k in metrics])}",
                        UserWarning,
                        stacklevel=2,
                    )
                value = 0
            if conversion == "!r":
                value = repr(value)
            elif conversion in ("!s", "!a"):
                value = str(value)
            text = format(value, spec)
            if self.auto_insert_metric_name:
                text = f"{key.replace('/', '_')}{self.CHECKPOINT_EQUALS_CHAR}{text}"
            return text

        return _FIELD.sub(replace, template)

    def _free_path(self, filepath: str, reusable: str | None = None) -> str:
        """``filepath``, or ``...-v1.ckpt`` etc. when a file of that name exists
        that this instance may not overwrite."""
        if filepath == reusable or filepath in self._written or not os.path.exists(filepath):
            return filepath
        stem = filepath[: -len(self.FILE_EXTENSION)]
        ver = self.STARTING_VERSION
        while True:
            candidate = f"{stem}{self.CHECKPOINT_JOIN_CHAR}v{ver}{self.FILE_EXTENSION}"
            if candidate == reusable or candidate in self._written or not os.path.exists(candidate):
                return candidate
            ver += 1

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        self._last_global_step_saved = trainer.global_step
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and getattr(trainer, "world_size", 1) > 1:
            # Rank zero looked at the files; every rank must use the name it chose.
            agreed = strategy.broadcast(filepath, 0)
            if agreed != filepath:
                self._rename_record(filepath, agreed)
                filepath = agreed
        if getattr(trainer, "is_global_zero", True):
            parent = os.path.dirname(filepath)
            if parent:
                os.makedirs(parent, exist_ok=True)
        trainer.save_checkpoint(filepath, weights_only=self.save_weights_only)
        self._written.add(filepath)

    def _rename_record(self, old: str, new: str) -> None:
        if old in self.best_k_models:
            self.best_k_models[new] = self.best_k_models.pop(old)
        self._recent = [new if p == old else p for p in self._recent]
        for attr in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if getattr(self, attr) == old:
                setattr(self, attr, new)

    def _remove(self, trainer: Trainer, filepath: str) -> None:
        if filepath not in self._written:
            return  # not ours (an earlier run's, or the user's): leave it
        if filepath in self.best_k_models or filepath in self._recent or filepath in (self.best_model_path, self.last_model_path):
            return  # still referenced
        self._written.discard(filepath)
        strategy = getattr(trainer, "strategy", None)
        remover = getattr(strategy, "remove_checkpoint", None)
        if remover is not None:
            remover(filepath)
        elif getattr(trainer, "is_global_zero", True) and os.path.exists(filepath):
            os.remove(filepath)

    def _say(self, trainer: Trainer, message: str) -> None:
        if getattr(trainer, "is_global_zero", True):
            print(f"ModelCheckpoint: {message}", flush=True)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        def f(value: Any) -> float | None:
            return None if value is None else float(value)

        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "dirpath": self.dirpath,
            "best_model_score": f(self.best_model_score),
            "best_model_path": self.best_model_path,
            "current_score": f(self.current_score),
            "best_k_models": {path: float(score) for path, score in self.best_k_models.items()},
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": f(self.kth_value),
            "last_model_path": self.last_model_path,
            "recent": list(self._recent),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import torch

        def t(value: Any) -> torch.Tensor | None:
            return None if value is None else torch.tensor(float(value), dtype=torch.float64)

        self.best_model_score = t(state_dict.get("best_model_score"))
        self.best_model_path = state_dict.get("best_model_path", "") or ""
        self.current_score = t(state_dict.get("current_score"))
        self.best_k_models = {p: t(s) for p, s in (state_dict.get("best_k_models") or {}).items()}  # type: ignore[misc]
        self.kth_best_model_path = state_dict.get("kth_best_model_path", "") or ""
        self.kth_value = t(state_dict.get("kth_value"))
        self.last_model_path = state_dict.get("last_model_path", "") or ""
        self._recent = list(state_dict.get("recent") or [])
        saved_dir = state_dict.get("dirpath")
        if self._dir_resolved:
            self._reconcile_dirpath(saved_dir)
        else:  # restored before setup(): compare once the directory is known
            self._restored_dir = saved_dir

    def _reconcile_dirpath(self, saved_dir: str | None) -> None:
        """A restored record names files in ``saved_dir``. Without a ``dirpath``
        of its own the callback goes on writing there; with a different one it
        forgets the best-k records (whose files are elsewhere) but keeps
        ``last_model_path``."""
        if saved_dir is None or self.dirpath is None or os.path.abspath(saved_dir) == os.path.abspath(self.dirpath):
            return
        if self._user_dirpath is None:
            self.dirpath = saved_dir
            return
        warnings.warn(
            f"ModelCheckpoint: the checkpoint directory changed from {saved_dir!r} to {self.dirpath!r}; "
            "the best-checkpoint records are not restored, only last_model_path.",
            UserWarning,
            stacklevel=3,
        )
        self.best_k_models = {}
        self.best_model_path = self.kth_best_model_path = ""
        self.best_model_score = self.kth_value = self.current_score = None
        self._recent = []


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "model_checkpoint", ModelCheckpoint)
