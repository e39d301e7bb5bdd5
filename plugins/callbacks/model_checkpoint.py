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
the file replacing them was written. It never replaces a file it did not
write: a new name is claimed atomically (``os.link``), so two runs sharing
one ``dirpath`` get ``...-v1.ckpt`` names instead of each other's files.
Beside the checkpoints it keeps ``ember_checkpoints.json`` (which file is
best, with its score, and which is last), which ``ckpt_path="best"`` reads
in a new process.

A resumed run writes where its own configuration says, never where the
checkpoint says; restored records are matched by file name in that directory.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.plugins.callbacks._checkpoint_files import (  # noqa: F401  (has_validation, missing_metric_error: public here)
    CheckpointFiles,
    MissingMetricError,
    as_number,
    check_arguments,
    check_writable_dir,
    checkpoint_state,
    fill_template,
    has_validation,
    load_checkpoint_state,
    match_records,
    missing_metric_error,
    record_entry,
    rename_record,
    score_tensor,
)
from ember.plugins.checkpoint_io.torch_io import remove_stale_temp_files

if TYPE_CHECKING:
    import torch

    from ember.module import Module
    from ember.trainer import Trainer


def _state_stage(trainer: Trainer) -> tuple[str | None, bool]:
    return trainer.state.fn, trainer.sanity_checking


class ModelCheckpoint(CheckpointFiles, Callback):
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
    :param train_time_interval: save every time this much training time (a
        ``datetime.timedelta``) has passed, checked after each step.
    :param enable_version_counter: ``False`` overwrites a file of the same
        name instead of writing ``...-v1.ckpt``.
    :param save_on_exception: save ``<name>-exception.ckpt`` when fit fails.
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
        train_time_interval: datetime.timedelta | None = None,
        enable_version_counter: bool = True,
        save_on_exception: bool = False,
    ) -> None:
        check_arguments(mode, save_top_k, every_n_train_steps, every_n_epochs, dirpath)
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
        if train_time_interval is not None and (every_n_train_steps or every_n_epochs):
            raise ValueError("ModelCheckpoint: choose one of every_n_train_steps, every_n_epochs and train_time_interval.")
        self._train_time_interval = train_time_interval.total_seconds() if train_time_interval is not None else None
        self._last_time_saved = time.monotonic()
        self.enable_version_counter = enable_version_counter
        self.save_on_exception = save_on_exception
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
        #: Without a monitor: the paths of the last ``save_top_k`` checkpoints, oldest first (first in, first out).
        self.recent_model_paths: list[str] = []

        # This run only.
        self._written: set[str] = set()
        self._last_global_step_saved = -1
        self._validated_epoch = -1
        self._epoch_end_done = -1
        self._validation_ran = False
        self._warned_missing_fields: set[str] = set()
        self._dir_resolved = False  # setup() has fixed self.dirpath for the current run
        self._restored_dir: str | None = None  # dirpath from a checkpoint loaded before setup()
        self._base_names: dict[str, str] = {}  # "x-v2.ckpt" -> "x.ckpt": versions count up from the template's name

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
            dirpath, culprit = self._user_dirpath, f"ModelCheckpoint(dirpath=...) (now {self._user_dirpath!r})"
        else:
            base = trainer.log_dir or trainer.default_root_dir or os.getcwd()
            dirpath, culprit = os.path.join(os.fspath(base), "checkpoints"), "Trainer(default_root_dir=...) or ModelCheckpoint(dirpath=...)"
        if trainer.world_size > 1:
            dirpath = trainer.strategy.broadcast(dirpath)
        self.dirpath = dirpath
        self._dir_resolved = True
        if stage == "fit":
            check_writable_dir(dirpath, culprit)  # now, not when the first save fails an epoch later
            if trainer.is_global_zero:
                remove_stale_temp_files(dirpath)
        if self._restored_dir is not None:
            saved, self._restored_dir = self._restored_dir, None
            match_records(self, saved or None)
        if stage == "fit":
            self._written = set()
            self._last_global_step_saved = -1
            self._validated_epoch = -1
            self._epoch_end_done = -1
            self._validation_ran = False

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._dir_resolved = False

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        """``save_on_exception=True``: save ``<name>-exception.ckpt`` when fit fails."""
        if not self.save_on_exception or not self._dir_resolved or trainer.state.fn != "fit":
            return
        name = self.format_checkpoint_name(self._monitor_candidates(trainer))
        path = name[: -len(self.FILE_EXTENSION)] + f"{self.CHECKPOINT_JOIN_CHAR}exception{self.FILE_EXTENSION}"
        trainer.save_checkpoint(path, self.save_weights_only)

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = self._every_n_train_steps
        if self._train_time_interval is not None:
            # Every process must agree, or some would save and some would not.
            due = time.monotonic() - self._last_time_saved >= self._train_time_interval
            if trainer.world_size > 1:
                due = bool(trainer.strategy.broadcast(due, src=0))
            if not due or trainer.global_step == 0 or self._should_skip(trainer):
                return
            self._last_time_saved = time.monotonic()
        elif n < 1:
            return
        else:
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
        return sanity or fn != "fit" or bool(trainer.fast_dev_run) or trainer.global_step == self._last_global_step_saved

    def _save_on_schedule(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        n = self._every_n_epochs
        if n >= 1 and (trainer.current_epoch + 1) % n == 0:
            self._save_topk(trainer, candidates)
        self._save_last(trainer, candidates)

    def _monitor_candidates(self, trainer: Trainer) -> dict[str, Any]:
        candidates = dict(trainer.callback_metrics)
        candidates["epoch"] = trainer.current_epoch
        candidates["step"] = trainer.global_step
        return candidates

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

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
            raise missing_metric_error(f"ModelCheckpoint(monitor={self.monitor!r})", self.monitor, trainer.callback_metrics)
        current = score_tensor(candidates[self.monitor], self.mode)
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
        self._save_checkpoint(trainer, filepath, reusable=dropped)
        if dropped is not None and dropped != self.best_model_path and dropped not in self.best_k_models:
            self._remove(trainer, dropped)

    def _save_latest(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        k = self.save_top_k
        reusable = self.recent_model_paths[0] if k > 0 and len(self.recent_model_paths) >= k else None
        filepath = self._free_path(self.format_checkpoint_name(candidates), reusable=reusable)
        if filepath in self.recent_model_paths:
            self.recent_model_paths.remove(filepath)
        self.recent_model_paths.append(filepath)
        dropped: list[str] = []
        while k != -1 and len(self.recent_model_paths) > k:
            dropped.append(self.recent_model_paths.pop(0))
        self.best_model_path = filepath
        if self.verbose:
            self._say(trainer, f"epoch {trainer.current_epoch}, step {trainer.global_step}: saving model to {filepath!r}")
        self._save_checkpoint(trainer, filepath, reusable=reusable)
        for path in dropped:
            if path not in self.recent_model_paths:
                self._remove(trainer, path)

    def _save_last(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        if not self.save_last:
            return
        previous = self.last_model_path
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        filepath = self._free_path(filepath, reusable=previous or None)
        self.last_model_path = filepath
        self._save_checkpoint(trainer, filepath, reusable=previous or None)
        if previous and previous != self.last_model_path:
            self._remove(trainer, previous)

    # ------------------------------------------------------------------ files
    def _say(self, trainer: Trainer, message: str) -> None:
        if trainer.is_global_zero:
            print(f"ModelCheckpoint: {message}", flush=True)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return checkpoint_state(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_checkpoint_state(self, state_dict)
        saved_dir = state_dict.get("dirpath")
        if self._dir_resolved:
            match_records(self, saved_dir)
        else:  # restored before setup(): matched once this run's directory is known
            self._restored_dir = saved_dir or ""


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "model_checkpoint", ModelCheckpoint)
