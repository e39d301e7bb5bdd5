"""``AdvancedProfiler``: the simple profiler's table plus cProfile of the whole run.

``Trainer(profiler="advanced")``. cProfile is switched on in ``on_fit_start``
(or when a ``validate`` / ``test`` / ``predict`` run starts) and off just
before the report, so it sees the loops, the user's steps, torch's Python
layers and every hook. The report (the per-hook table followed by the
functions with the largest cumulative time) is printed and written to
``{dirpath}/{filename}`` (default: the trainer's ``log_dir`` and
``advanced_profile.txt``); with ``dump_stats=True`` the raw statistics go
next to it as ``.prof`` (open them with ``python -m pstats`` or snakeviz).

cProfile makes every Python call slower, so the times in this profile are
inflated; use it to see *where* time goes, and the simple profiler for how
much.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import warnings
from typing import TYPE_CHECKING, Any

from ember.plugin_manager import hookimpl
from ember.plugins.profilers.simple import SimpleProfiler

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


class AdvancedProfiler(SimpleProfiler):
    """Per-hook timings plus cProfile statistics of the whole run.

    :param dirpath: directory of the report (default: ``trainer.log_dir``).
    :param filename: report file name (default ``advanced_profile.txt``).
    :param line_count_restriction: how much of the cProfile listing to show, as
        pstats takes it: a fraction (default ``1.0``: all functions) or a count (``30``).
    :param dump_stats: also write the raw statistics as ``{report stem}.prof``.
    :param sort_by: pstats sort key of the listing (``"cumulative"``, ``"tottime"``, ...).
    """

    default_filename = "advanced_profile.txt"

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        line_count_restriction: float = 1.0,
        dump_stats: bool = False,
        sort_by: str = "cumulative",
        top: int = 25,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename, top=top)
        if isinstance(line_count_restriction, float) and not 0.0 <= line_count_restriction <= 1.0:
            raise ValueError(f"AdvancedProfiler(line_count_restriction={line_count_restriction}): a fraction in [0, 1] or a count (int).")
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats
        self.sort_by = sort_by
        self._profile: cProfile.Profile | None = None
        self._stats_text = ""
        self.stats_path: str | None = None

    # ------------------------------------------------------------------ cProfile on / off
    def _enable(self) -> None:
        if self._profile is not None:
            return
        profile = cProfile.Profile()
        try:
            profile.enable()
        except ValueError as exc:  # another profiler (coverage, a debugger) holds the hook
            warnings.warn(f"AdvancedProfiler could not start cProfile ({exc}); only the hook table is reported.", stacklevel=3)
            return
        self._profile = profile

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        super().on_fit_start(trainer, module)
        self._enable()

    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        super().on_validation_start(trainer, module)
        if trainer.state.fn == "validate":
            self._enable()

    def on_test_start(self, trainer: Trainer, module: Module) -> None:
        super().on_test_start(trainer, module)
        self._enable()

    def on_predict_start(self, trainer: Trainer, module: Module) -> None:
        super().on_predict_start(trainer, module)
        self._enable()

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        self._finish(trainer)

    def _finish(self, trainer: Trainer) -> None:
        profile, self._profile = self._profile, None
        if profile is None:
            return
        profile.disable()
        buf = io.StringIO()
        stats = pstats.Stats(profile, stream=buf)
        stats.strip_dirs().sort_stats(self.sort_by).print_stats(self.line_count_restriction)
        self._stats_text = buf.getvalue().strip("\n")
        path = self._report_path(trainer)
        if path is not None and self.dump_stats:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self.stats_path = os.path.splitext(path)[0] + ".prof"
            profile.dump_stats(self.stats_path)

    def _extra_report(self, trainer: Trainer) -> str:
        if not self._stats_text:
            return ""
        limit = self.line_count_restriction
        shown = "all functions" if limit == 1.0 else (f"top {limit:.0%} of functions" if isinstance(limit, float) else f"top {limit} functions")
        title = f"cProfile: {shown} by {self.sort_by} time"
        return f"{title}\n{'-' * len(title)}\n{self._stats_text}\n"

    def _default_dir(self, trainer: Trainer) -> str | None:
        return trainer.log_dir or "."

    def cprofile_text(self) -> str:
        """The cProfile listing of the last run."""
        return self._stats_text


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("profiler", "advanced", AdvancedProfiler)
