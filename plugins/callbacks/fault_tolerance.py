"""Checkpoints when a run is preempted or fails.

Cluster schedulers (SLURM, Kubernetes, spot instances) announce preemption
with SIGTERM and a grace period. ``FaultTolerance`` catches the signal, lets
the current training step (or validation batch, or sanity-check batch)
finish (through :attr:`ember.loops.state.RunState.interrupt`, so it adds no
per-batch hook), writes ``trainer.resume_checkpoint_path`` and ends the process with
:data:`ember.EXIT_PREEMPTED`; a relaunch with
``Trainer(auto_resume=True)`` (or ``ember fit --trainer.auto_resume true``)
continues from it, exactly. Under SLURM (``SLURM_JOB_ID`` set and ``scontrol``
on the PATH) rank zero also asks the scheduler to requeue the job
(``scontrol requeue``), so the relaunch happens by itself; ``requeue=False``
turns that off. With ``on_exception=True`` it also writes
``on_exception.ckpt`` beside it when training raises, before the error goes on.

Worst-case delay between the signal and the start of the save: the rest of
the batch in progress (its data loading, ``training_step`` with backward and
optimizer step, or one ``validation_step``) and that batch's
``on_*_batch_end`` hooks; a checkpoint written during a
validation resumes by running that validation again. The save itself then
takes as long as any checkpoint write.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import warnings
from typing import Any

from ember.callback import Callback
from ember.errors import EXIT_PREEMPTED, Preempted
from ember.plugin_manager import hookimpl
from ember.plugins.callbacks._checkpoint_files import check_writable_dir
from ember.plugins.checkpoint_io.torch_io import remove_stale_temp_files


class FaultTolerance(Callback):
    fills = "fault_tolerance"

    def __init__(
        self,
        preemption: bool = True,
        on_exception: bool = False,
        signals: tuple[str, ...] = ("SIGTERM",),
        exit_code: int = EXIT_PREEMPTED,
        requeue: bool | None = None,
    ) -> None:
        unknown = [name for name in signals if not isinstance(getattr(signal, str(name), None), signal.Signals)]
        if unknown:
            raise ValueError(f"FaultTolerance(signals=...): unknown signal name(s) {unknown}; use names like 'SIGTERM' or 'SIGUSR1'.")
        self.preemption = preemption
        self.on_exception_checkpoint = on_exception
        self.signals = tuple(getattr(signal, str(name)) for name in signals)
        self.exit_code = exit_code
        self.requeue = requeue  # None: requeue when running under SLURM
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: Any = None  # the trainer whose fit is running, for the signal handler

    # -- signal handling ------------------------------------------------------
    def _handle(self, signum: int, frame: Any) -> None:
        # Only a flag and a request: the batch in progress finishes, then the
        # loop runs the interrupt. No per-batch hook is needed for this, so a
        # run that is never signalled pays nothing per step.
        self.received = signum
        if self._trainer is not None:
            self._trainer.state.interrupt = self._interrupt

    def _interrupt(self) -> None:
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "fit":  # a validate() or test() run is not saved
            self._save_and_exit_if_signalled(trainer)

    def on_fit_start(self, trainer: Any, module: Any) -> None:
        self.received = None
        self._trainer = trainer
        if not self.preemption:
            return
        directory = os.path.dirname(trainer.resume_checkpoint_path)
        # Fail now, not when the preemption comes and the save cannot be written.
        check_writable_dir(
            directory,
            f"Trainer(default_root_dir=...) (now {trainer.default_root_dir!r})",
            ", or turn preemption saves off (enable_fault_tolerance=False)",
        )
        if trainer.is_global_zero:
            remove_stale_temp_files(directory)
        if threading.current_thread() is not threading.main_thread():
            warnings.warn("FaultTolerance: fit() is not running in the main thread, so preemption signals cannot be caught.", stacklevel=2)
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def teardown(self, trainer: Any, module: Any, stage: str) -> None:
        self._trainer = None
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _save_and_exit_if_signalled(self, trainer: Any) -> None:
        if self.received is None:
            return
        name = signal.Signals(self.received).name
        path = trainer.resume_checkpoint_path
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            print(
                f"ember: {name} received; saved {path} after step {trainer.global_step}; exiting with status {self.exit_code}.", flush=True
            )
            self._requeue_if_slurm()
        raise Preempted(self.exit_code, signal_name=name, checkpoint=path)

    # Within one batch of the signal (training, validation and the sanity
    # check): the loops run :meth:`_interrupt` after the batch's end hooks.
    # The two hooks below catch a signal that came between batches.
    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save_and_exit_if_signalled(trainer)

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        self._save_and_exit_if_signalled(trainer)

    def _requeue_if_slurm(self) -> None:
        job = os.environ.get("SLURM_JOB_ID")
        if self.requeue is False or job is None:
            return
        if "SLURM_ARRAY_JOB_ID" in os.environ and "SLURM_ARRAY_TASK_ID" in os.environ:
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        scontrol = shutil.which("scontrol")
        if scontrol is None:
            if self.requeue:
                warnings.warn("FaultTolerance(requeue=True): scontrol is not on the PATH, so the job was not requeued.", stacklevel=3)
            return
        try:
            result = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            warnings.warn(f"FaultTolerance: `scontrol requeue {job}` failed ({exc}); requeue the job yourself.", stacklevel=3)
            return
        if result.returncode == 0:
            print(f"ember: requeued SLURM job {job}.", flush=True)
        else:
            warnings.warn(
                f"FaultTolerance: `scontrol requeue {job}` failed ({result.stderr.strip() or result.returncode}); "
                "submit with --requeue, or requeue the job yourself.",
                stacklevel=3,
            )

    # -- failures ---------------------------------------------------------------
    def on_exception(self, trainer: Any, module: Any, exception: BaseException) -> None:
        if not self.on_exception_checkpoint or isinstance(exception, Preempted) or trainer.state.fn != "fit" or not trainer.optimizers:
            return
        path = os.path.join(os.path.dirname(trainer.resume_checkpoint_path), "on_exception.ckpt")
        try:
            trainer.save_checkpoint(path)
        except Exception as save_error:  # the original error is what the user must see
            warnings.warn(f"FaultTolerance could not write {path}: {save_error}", stacklevel=2)
            return
        if trainer.is_global_zero:
            print(f"ember: training raised {type(exception).__name__}; saved the state before the failing step to {path}.", flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {}


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("callback", "fault_tolerance", FaultTolerance)
