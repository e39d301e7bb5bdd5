"""``SimpleProfiler``: wall time of every hook implementation, per owner.

``Trainer(profiler="simple")`` (or ``profiler=SimpleProfiler(...)``). The
trainer hands :meth:`SimpleProfiler.wrap` every hook implementation once per
run; each one is replaced by a small closure that adds its elapsed
``time.perf_counter`` time and a call count to a record of its own
``(hook, owner)`` pair. The owner says whose code it is: ``callback:X``,
``logger:X``, ``module:X`` or a plugin's module path.

As a callback the profiler also times whole loop units with its own hooks:
training batches (from its ``on_train_batch_start`` to its
``on_train_batch_end``), training epochs, and validation / test / predict
batches. At ``on_fit_end`` (or ``teardown`` for ``validate``, ``test`` and
``predict``, or a fit that failed) it prints a report; :meth:`summary`
returns the same text and :meth:`results` the rows as dicts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

_clock = time.perf_counter

#: The loop units timed by the profiler's own hooks: key -> label in the report.
_LOOP_LABELS = {
    "setup": "set-up before the loop",
    "train_epoch": "training epoch",
    "train_batch": "training batch",
    "val_batch": "validation batch",
    "test_batch": "test batch",
    "predict_batch": "predict batch",
}


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    return [line(header), line(tuple("-" * w for w in widths)), *map(line, rows)]


class SimpleProfiler(Callback):
    """Time every hook implementation and the training loop's batches and epochs.

    :param dirpath: directory to write the report to; with ``filename`` unset
        the file is ``profile.txt``. Neither given: no file, the report is
        printed only.
    :param filename: file name of the report (``.txt`` is added when it has no
        extension). With more than one process, ``-rank{N}`` is inserted.
    :param top: how many hook rows the printed table shows (all are in
        :meth:`results`).
    :param extended: the tables have the call counts and the share of the
        run's time (``False``: total and mean only).
    """

    default_filename = "profile.txt"

    def __init__(
        self, dirpath: str | os.PathLike[str] | None = None, filename: str | None = None, top: int = 25, extended: bool = True
    ) -> None:
        self.extended = extended
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename
        self.top = int(top)
        # (hook, owner) -> [calls, total seconds]; the wrappers hold the lists.
        self._records: dict[tuple[str, str], list[Any]] = {}
        self._loops: dict[str, list[Any]] = {key: [0, 0.0] for key in _LOOP_LABELS}
        self._marks: dict[str, float] = {}
        self._run_start: float | None = None
        self._run_end: float | None = None
        self._stage: str | None = None
        self._reported = True  # so that the first wrap() starts a fresh run
        self._frozen: list[dict[str, Any]] | None = None
        self.report_path: str | None = None

    # ------------------------------------------------------------------ the Profiler role
    def _is_own(self, owner: str, fn: Callable[..., Any]) -> bool:
        if getattr(fn, "__self__", None) is self:
            return True
        return owner.split("#", 1)[0] == f"callback:{type(self).__qualname__}" and getattr(fn, "__self__", self) is self

    def _begin_run_if_needed(self) -> None:
        # wrap() is called when the trainer resolves the dispatch of a new
        # run: after a report, that starts a new measurement.
        if self._reported:
            self._reported = False
            for rec in self._records.values():
                rec[0], rec[1] = 0, 0.0
            for rec in self._loops.values():
                rec[0], rec[1] = 0, 0.0
            self._marks.clear()
            self._frozen = None
            self._run_start = _clock()
            self._run_end = None

    def wrap(self, hook_name: str, owner: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``fn`` wrapped in a timer for ``(hook_name, owner)``."""
        self._begin_run_if_needed()
        if self._is_own(owner, fn):
            return fn  # the profiler's own bookkeeping is not measured
        rec = self._records.setdefault((hook_name, owner), [0, 0.0])
        clock = _clock

        def timed(*args: Any) -> Any:
            start = clock()
            try:
                return fn(*args)
            finally:
                rec[1] += clock() - start
                rec[0] += 1

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        timed.ember_profiled = (hook_name, owner)  # type: ignore[attr-defined]
        return timed

    # ------------------------------------------------------------------ loop units
    def _start(self, key: str) -> None:
        self._marks[key] = _clock()

    def _stop(self, key: str) -> None:
        start = self._marks.pop(key, None)
        if start is not None:
            rec = self._loops[key]
            rec[1] += _clock() - start
            rec[0] += 1

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._begin_run_if_needed()
        self._stage = stage

    def _setup_done(self) -> None:
        if self._run_start is not None and self._loops["setup"][0] == 0:
            self._loops["setup"][:] = [1, _clock() - self._run_start]

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        self._setup_done()

    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        self._setup_done()  # only the first call of a run counts

    def on_test_start(self, trainer: Trainer, module: Module) -> None:
        self._setup_done()

    def on_predict_start(self, trainer: Trainer, module: Module) -> None:
        self._setup_done()

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        self._start("train_epoch")

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        self._stop("train_epoch")

    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
        self._marks["train_batch"] = _clock()

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        start = self._marks.pop("train_batch", None)
        if start is not None:
            rec = self._loops["train_batch"]
            rec[1] += _clock() - start
            rec[0] += 1

    def on_validation_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._start("val_batch")

    def on_validation_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._stop("val_batch")

    def on_test_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._start("test_batch")

    def on_test_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop("test_batch")

    def on_predict_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._start("predict_batch")

    def on_predict_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._stop("predict_batch")

    # ------------------------------------------------------------------ reporting
    def on_fit_end(self, trainer: Trainer, module: Module) -> None:
        self._report(trainer)

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        if not self._reported:
            self._report(trainer)

    def _elapsed(self) -> float:
        if self._run_start is None:
            return 1e-12
        end = self._run_end if self._run_end is not None else _clock()
        return max(end - self._run_start, 1e-12)

    def results(self) -> list[dict[str, Any]]:
        """One dict per measured ``(hook, owner)`` and loop unit, hooks sorted by
        total time (largest first), then the loop units. Keys: ``kind``
        (``"hook"`` or ``"loop"``), ``hook``, ``owner``, ``calls``, ``total_s``,
        ``mean_s``, ``percent`` (of the measured run time). After a report these
        are the reported figures (hooks that run later, such as other
        callbacks' ``teardown``, are not added); during a run, the figures so far."""
        if self._frozen is not None:
            return [dict(r) for r in self._frozen]
        return self._compute_results()

    def _compute_results(self) -> list[dict[str, Any]]:
        run = self._elapsed()
        hooks = [
            {
                "kind": "hook",
                "hook": hook,
                "owner": owner,
                "calls": rec[0],
                "total_s": rec[1],
                "mean_s": rec[1] / rec[0],
                "percent": 100.0 * rec[1] / run,
            }
            for (hook, owner), rec in self._records.items()
            if rec[0]
        ]
        hooks.sort(key=lambda r: r["total_s"], reverse=True)
        loops = [
            {
                "kind": "loop",
                "hook": _LOOP_LABELS[key],
                "owner": "trainer",
                "calls": rec[0],
                "total_s": rec[1],
                "mean_s": rec[1] / rec[0],
                "percent": 100.0 * rec[1] / run,
            }
            for key, rec in self._loops.items()
            if rec[0]
        ]
        return hooks + loops

    def summary(self) -> str:
        """The report as text: run time, loop units, then the costliest hooks."""
        rows = self.results()
        run = self._elapsed()
        hooks = [r for r in rows if r["kind"] == "hook"]
        loops = [r for r in rows if r["kind"] == "loop"]
        hook_total = sum(r["total_s"] for r in hooks)
        title = f"{type(self).__name__} report" + (f" ({self._stage})" if self._stage else "")
        out = [title, "=" * len(title), f"measured run time: {_fmt_seconds(run)}; in hooks: {_fmt_seconds(hook_total)} ({100 * hook_total / run:.1f}%)"]

        def cells(r: dict[str, Any], *, owner: bool) -> tuple[str, ...]:
            c = (r["hook"],) + ((r["owner"],) if owner else ())
            return c + (str(r["calls"]), _fmt_seconds(r["total_s"]), _fmt_seconds(r["mean_s"]), f"{r['percent']:.1f}%")

        def table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
            if not self.extended:  # without the call counts and the share of the run
                keep = [i for i, h in enumerate(header) if h not in ("count", "calls", "% run")]
                header, rows = tuple(header[i] for i in keep), [tuple(r[i] for i in keep) for r in rows]
                right = {keep.index(i) for i in right if i in keep}
            return _table(header, rows, right)

        if loops:
            out += ["", *table(("loop unit", "count", "total", "mean", "% run"), [cells(r, owner=False) for r in loops], {1, 2, 3, 4})]
        if hooks:
            shown = hooks[: self.top] if self.top > 0 else hooks
            out += ["", *table(("hook", "owner", "calls", "total", "mean", "% run"), [cells(r, owner=True) for r in shown], {2, 3, 4, 5})]
            if len(shown) < len(hooks):
                out.append(f"... {len(hooks) - len(shown)} more hook rows in results()")
        else:
            out += ["", "no hook implementation was called"]
        return "\n".join(out) + "\n"

    def _report(self, trainer: Trainer) -> None:
        self._run_end = _clock()
        self._reported = True
        self._frozen = self._compute_results()
        self._finish(trainer)
        text = self.summary()
        extra = self._extra_report(trainer)
        if extra:
            text += "\n" + extra
        if trainer.is_global_zero:
            sys.stdout.write("\n" + text)
            sys.stdout.flush()
        path = self._report_path(trainer)
        if path is not None:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            self.report_path = path

    # Subclasses add to the report and decide its default location.
    def _finish(self, trainer: Trainer) -> None:
        """Stop whatever the profiler started before the report is written."""

    def _extra_report(self, trainer: Trainer) -> str:
        return ""

    def _default_dir(self, trainer: Trainer) -> str | None:
        return None

    def _report_path(self, trainer: Trainer) -> str | None:
        dirpath = self.dirpath
        if dirpath is None and self.filename is not None:
            dirpath = trainer.log_dir or "."
        if dirpath is None:
            dirpath = self._default_dir(trainer)
        if dirpath is None:
            return None
        return os.path.join(dirpath, _rank_name(self.filename or self.default_filename, trainer))


def _rank_name(filename: str, trainer: Trainer) -> str:
    stem, ext = os.path.splitext(filename)
    ext = ext or ".txt"
    if trainer.world_size > 1:
        stem = f"{stem}-rank{trainer.global_rank}"
    return stem + ext


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("profiler", "simple", SimpleProfiler)
