"""``TQDMProgressBar`` and ``RichProgressBar``: the built-in progress bar with
Lightning's argument names.

``refresh_rate`` counts batches (redraw every n-th batch; 0 turns the bar off),
where :class:`~ember.plugins.callbacks.progress.ProgressBar` counts seconds.
``RichProgressBar`` draws with `rich <https://github.com/Textualize/rich>`_
(an optional dependency: ``pip install rich``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ember.plugins.callbacks.progress import BarCounter, ProgressBar

if TYPE_CHECKING:
    from ember.trainer import Trainer


class TQDMProgressBar(ProgressBar):
    """The progress bar, redrawn every ``refresh_rate`` batches.

    :param refresh_rate: batches between two redraws; ``0`` disables the bar.
    :param process_position: line offset of the bars (to stack several programs' bars).
    :param leave: keep each epoch's finished bar on screen.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        if not isinstance(refresh_rate, int) or refresh_rate < 0:
            raise ValueError(f"{type(self).__name__}(refresh_rate={refresh_rate!r}) must be an int >= 0 (batches; 0 disables the bar).")
        super().__init__(refresh_rate_s=0.0, leave=leave)
        self.refresh_rate = refresh_rate
        self.process_position = int(process_position)
        if refresh_rate == 0:
            self.disable()

    def _new_tqdm(self, desc: str, total: int | None, position: int, leave: bool) -> Any:
        return super()._new_tqdm(desc, total, position + self.process_position, leave)

    def _tick(self, bar: BarCounter, trainer: Trainer, with_metrics: bool, plain: bool) -> None:
        if bar.tqdm is not None:
            if bar.n % self.refresh_rate == 0 or bar.n == bar.total:
                self._redraw(bar, trainer, with_metrics)
        elif plain:
            now = time.monotonic()
            if now >= self._next_plain:
                self._next_plain = now + self.plain_interval_s
                self._redraw(bar, trainer, with_metrics)


@dataclass
class RichProgressBarTheme:
    """Styles of :class:`RichProgressBar` (rich style strings)."""

    description: str = ""
    progress_bar: str = "#6206E0"
    progress_bar_finished: str = "#6206E0"
    progress_bar_pulse: str = "#6206E0"
    batch_progress: str = ""
    time: str = "dim"
    processing_speed: str = "dim underline"
    metrics: str = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


class _RichTask:
    """The part of tqdm's interface the progress bar uses, drawn by rich."""

    def __init__(self, progress: Any, desc: str, total: int | None, theme: RichProgressBarTheme) -> None:
        self.progress, self.theme, self.n = progress, theme, 0
        self.task = progress.add_task(desc, total=total, metrics="")

    def set_postfix(self, metrics: dict[str, Any], refresh: bool = True) -> None:
        parts = []
        for key, value in metrics.items():
            try:
                parts.append(f"{key}: {float(value):{self.theme.metrics_format}}")
            except (TypeError, ValueError):
                parts.append(f"{key}: {value}")
        self.progress.update(self.task, metrics=self.theme.metrics_text_delimiter.join(parts))

    def refresh(self) -> None:
        self.progress.update(self.task, completed=self.n)
        self.progress.refresh()

    def reset(self, total: int | None = None) -> None:
        self.n = 0
        self.progress.reset(self.task, total=total)

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.progress.update(self.task, description=desc)

    def close(self) -> None:
        self.progress.update(self.task, visible=False)


class RichProgressBar(TQDMProgressBar):
    """The progress bar drawn with rich (``pip install rich``).

    :param refresh_rate: batches between two redraws; ``0`` disables the bar.
    :param leave: keep each epoch's finished bar on screen.
    :param theme: a :class:`RichProgressBarTheme`.
    :param console_kwargs: passed to ``rich.console.Console``.
    """

    def __init__(
        self,
        refresh_rate: int = 100,
        leave: bool = False,
        theme: RichProgressBarTheme = RichProgressBarTheme(),  # noqa: B008 - an immutable-by-convention default, as Lightning's
        console_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            import rich  # noqa: F401
        except ImportError as exc:
            raise ModuleNotFoundError("RichProgressBar needs rich: pip install rich (or use TQDMProgressBar).") from exc
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.theme = theme
        self.console_kwargs = dict(console_kwargs or {})
        self._progress: Any = None

    def _use_tqdm(self) -> bool:
        return True  # rich handles terminals and plain output itself

    def _new_tqdm(self, desc: str, total: int | None, position: int, leave: bool) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        if self._progress is None:
            t = self.theme
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}", style=t.description),
                BarColumn(style=t.progress_bar, complete_style=t.progress_bar_finished, pulse_style=t.progress_bar_pulse),
                TextColumn("{task.completed}/{task.total}", style=t.batch_progress),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}", style=t.metrics),
                console=Console(**self.console_kwargs),
                auto_refresh=False,
            )
            self._progress.start()
        return _RichTask(self._progress, desc, total, self.theme)

    def teardown(self, trainer: Trainer, module: Any, stage: str) -> None:
        super().teardown(trainer, module, stage)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
