"""``TorchProfiler``: ``torch.profiler`` over the training loop, one step per batch.

``Trainer(profiler="pytorch")`` or ``TorchProfiler(dirpath, wait=1, warmup=1,
active=3, repeat=1)``. Each hook implementation runs inside a
``torch.profiler.record_function`` range named ``"{owner}.{hook}"`` (for
example ``callback:ModelCheckpoint.on_train_batch_end``) and each training
batch inside a ``training_batch`` range, so the trace shows which plugin's
code launched which operators. The profiler steps once per training batch
following ``torch.profiler.schedule(wait, warmup, active, repeat,
skip_first)``; each finished ``active`` window is exported as a Chrome trace
(open it in ``chrome://tracing`` or https://ui.perfetto.dev) named
``{filename}-{N}.json`` in ``dirpath`` (default: the trainer's ``log_dir``).
A window that the end of the run cuts short is exported with what it
recorded; a run that ends before any window starts recording writes no
trace and says so with a warning.
CPU activity is always recorded, CUDA activity when CUDA is available.

A ``validate``/``test``/``predict`` run is profiled as one window, without a
schedule, exported at its end.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


class TorchProfiler(Callback):
    """Profile with ``torch.profiler`` and export Chrome traces.

    :param dirpath: where traces (and the operator table) go; default ``trainer.log_dir``.
    :param filename: stem of the trace files (default ``trace``).
    :param wait, warmup, active, repeat, skip_first: ``torch.profiler.schedule``
        arguments, counted in training batches. ``active=0`` records every
        batch of the run in one window (large traces).
    :param record_shapes, profile_memory, with_stack: passed to ``torch.profiler.profile``.
    :param row_limit: rows of the operator table printed at the end (0: none).
    :param sort_by: column the operator table is sorted by (Lightning's
        ``sort_by_key`` is accepted too).
    :param group_by_input_shapes: one table row per operator and input shape
        (records shapes).
    :param export_to_chrome: write the Chrome traces (``False``: the table only).
    :param table_kwargs: more arguments of ``key_averages().table(...)``.
    :param record_module_names: a ``record_function`` range around every
        submodule's forward, named after it (see :mod:`ember.plugins.profilers.module_ranges`).
    :param emit_nvtx: NVTX ranges for ``nsys``/``nvprof`` instead of
        ``torch.profiler`` (CUDA only; no trace is written).
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        *,
        wait: int = 1,
        warmup: int = 1,
        active: int = 3,
        repeat: int = 1,
        skip_first: int = 0,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        row_limit: int = 20,
        sort_by: str | None = None,
        group_by_input_shapes: bool = False,
        export_to_chrome: bool = True,
        sort_by_key: str | None = None,
        table_kwargs: dict[str, Any] | None = None,
        record_module_names: bool = True,
        emit_nvtx: bool = False,
    ) -> None:
        for name, value in (("wait", wait), ("warmup", warmup), ("active", active), ("repeat", repeat), ("skip_first", skip_first)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TorchProfiler({name}={value!r}) must be a non-negative int.")
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename or "trace"
        self.group_by_input_shapes = group_by_input_shapes
        self.export_to_chrome = export_to_chrome
        self.table_kwargs = dict(table_kwargs or {})
        self.record_module_names = record_module_names
        self.emit_nvtx = emit_nvtx
        self._module_ranges: Any = None
        if sort_by_key is not None:  # Lightning's name for sort_by
            sort_by = sort_by_key
        if group_by_input_shapes:
            record_shapes = True  # grouping by shape needs the shapes
        self.schedule_args = {"wait": wait, "warmup": warmup, "active": active, "repeat": repeat, "skip_first": skip_first}
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.with_stack = with_stack
        self.row_limit = int(row_limit)
        self.sort_by = sort_by
        self.trace_paths: list[str] = []
        self._prof: Any = None
        self._batch_range: Any = None
        self._dir: str = "."
        self._table = ""

    # ------------------------------------------------------------------ the Profiler role
    def wrap(self, hook_name: str, owner: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Run ``fn`` inside a ``record_function("{owner}.{hook_name}")`` range."""
        if getattr(fn, "__self__", None) is self or owner.split("#", 1)[0] == f"callback:{type(self).__qualname__}":
            return fn
        from torch.profiler import record_function

        name = f"{owner}.{hook_name}"

        def ranged(*args: Any) -> Any:
            with record_function(name):
                return fn(*args)

        ranged.__wrapped__ = fn  # type: ignore[attr-defined]
        ranged.ember_profiled = (hook_name, owner)  # type: ignore[attr-defined]
        return ranged

    # ------------------------------------------------------------------ start / step / stop
    def _activities(self) -> list[Any]:
        import torch
        from torch.profiler import ProfilerActivity

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        return activities

    def _start(self, trainer: Trainer, scheduled: bool) -> None:
        import torch.profiler

        if self._prof is not None:
            return
        self._dir = self.dirpath or trainer.log_dir or "."
        os.makedirs(self._dir, exist_ok=True)
        self.trace_paths = []
        module = trainer.lightning_module
        if self.record_module_names and module is not None:
            from ember.plugins.profilers.module_ranges import ModuleRanges

            self._module_ranges = ModuleRanges(module)
        if self.emit_nvtx:
            from ember.plugins.profilers.module_ranges import NVTXRanges

            self._prof = NVTXRanges(self.record_shapes)
            self._prof.start()
            return
        schedule = None
        if scheduled and self.schedule_args["active"] > 0:
            schedule = torch.profiler.schedule(**self.schedule_args)
        self._prof = torch.profiler.profile(
            activities=self._activities(),
            schedule=schedule,
            on_trace_ready=lambda prof: self._export(prof, trainer),
            record_shapes=self.record_shapes,
            profile_memory=self.profile_memory,
            with_stack=self.with_stack,
        )
        self._prof.start()

    def _export(self, prof: Any, trainer: Trainer) -> None:
        rank = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = os.path.join(self._dir, f"{self.filename}{rank}-{len(self.trace_paths)}.json")
        if self.export_to_chrome:
            prof.export_chrome_trace(path)
            self.trace_paths.append(path)
        if self.row_limit > 0:
            sort_by = self.sort_by or ("self_cuda_time_total" if len(self._activities()) > 1 else "self_cpu_time_total")
            try:
                averages = prof.key_averages(group_by_input_shape=self.group_by_input_shapes)
                self._table = averages.table(**{"sort_by": sort_by, "row_limit": self.row_limit, **self.table_kwargs})
            except Exception as exc:  # a table is a nicety; the trace is what matters
                self._table = f"(no operator table: {exc})"

    def _stop(self, trainer: Trainer) -> None:
        prof, self._prof = self._prof, None
        if prof is None:
            return
        if self._batch_range is not None:
            self._batch_range.__exit__(None, None, None)
            self._batch_range = None
        if self._module_ranges is not None:
            self._module_ranges.remove()
            self._module_ranges = None
        if self.emit_nvtx:
            prof.stop()
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "incomplete profiler cycle": reported below instead
            prof.stop()
        if not self.trace_paths and not (not self.export_to_chrome and self._table):
            warnings.warn(
                f"TorchProfiler wrote no trace: the run ended before a full schedule window "
                f"({self.schedule_args}) of training batches had been recorded. Lower wait/warmup/active or run more batches.",
                stacklevel=3,
            )
            return
        if trainer.is_global_zero:
            lines = [f"TorchProfiler: {len(self.trace_paths)} trace(s) in {self._dir}: " + ", ".join(os.path.basename(p) for p in self.trace_paths)] if self.trace_paths else []
            if self._table:
                lines.append(self._table)
            sys.stdout.write("\n" + "\n".join(lines) + "\n")

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        self._start(trainer, scheduled=True)

    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
        if self._prof is not None:
            from torch.profiler import record_function

            self._batch_range = record_function("training_batch")
            self._batch_range.__enter__()

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._batch_range is not None:
            self._batch_range.__exit__(None, None, None)
            self._batch_range = None
        if self._prof is not None and trainer.state.fn == "fit":
            self._prof.step()

    def on_fit_end(self, trainer: Trainer, module: Module) -> None:
        self._stop(trainer)

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage != "fit":
            self._start(trainer, scheduled=False)

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._stop(trainer)

    def summary(self) -> str:
        """The operator table of the last exported window."""
        return self._table


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("profiler", "pytorch", TorchProfiler)
