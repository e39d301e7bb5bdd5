"""``ProgressBar``: tqdm bars on a terminal, periodic plain lines elsewhere.

On a terminal (``sys.stdout.isatty()``) it draws tqdm bars: one for training,
a second one for a validation run during ``fit``, and one for a test, predict
or stand-alone validate run. Elsewhere (CI logs, files, notebooks) it prints a
plain line every ``plain_interval_s`` seconds and one at the end of each epoch
or evaluation run, such as::

    epoch 3/10 · batch 40/57 · loss=0.213 · val_acc=0.97

Metrics come from ``trainer.progress_bar_metrics``, which costs a device sync,
so they are read only when the display is refreshed (a time-based decision
made with ``time.monotonic``), never on every step.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

_SEP = " · "


def _total(value: Any) -> int | None:
    """A batch count for display: ``None`` when unknown or infinite."""
    if isinstance(value, (list, tuple)):
        parts = [_total(v) for v in value]
        if any(p is None for p in parts):
            return None
        return sum(parts)  # type: ignore[arg-type]
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if math.isinf(f) or math.isnan(f):
        return None
    return int(f)


def format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, bool):
            parts.append(f"{key}={value}")
        elif isinstance(value, (int, float)):
            parts.append(f"{key}={value:.3g}")
        else:
            try:
                parts.append(f"{key}={float(value):.3g}")
            except (TypeError, ValueError):
                parts.append(f"{key}={value}")
    return _SEP.join(parts)


class BarCounter:
    """One progress counter of a :class:`ProgressBar`: a tqdm bar, or the
    bookkeeping for plain lines. Subclasses that override ``_tick`` (as
    ``TQDMProgressBar`` does) receive these."""

    def __init__(self, label: str, total: int | None, tqdm_bar: Any = None) -> None:
        self.label = label
        self.total = total
        self.n = 0
        self.tqdm = tqdm_bar


class ProgressBar(Callback):
    """Show training and evaluation progress.

    :param refresh_rate_s: minimum seconds between two redraws of a tqdm bar
        (and between two reads of ``trainer.progress_bar_metrics``).
    :param leave: keep finished tqdm bars on the screen.
    :param plain_interval_s: seconds between two plain lines when stdout is
        not a terminal.
    """

    fills = "progress_bar"

    def __init__(self, refresh_rate_s: float = 0.1, leave: bool = False, plain_interval_s: float = 10.0) -> None:
        if refresh_rate_s < 0 or plain_interval_s < 0:
            raise ValueError("ProgressBar intervals must be zero or positive.")
        self.refresh_rate_s = float(refresh_rate_s)
        self.leave = leave
        self.plain_interval_s = float(plain_interval_s)
        self._enabled = True
        self._tty: bool | None = None
        self._train: BarCounter | None = None
        self._eval: BarCounter | None = None
        self._next_refresh = 0.0  # time.monotonic() at which the next redraw is due
        self._next_plain = 0.0
        self._val_metrics: dict[str, Any] = {}

    # ------------------------------------------------------------------ public knobs
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    # ------------------------------------------------------------------ helpers
    def _active(self, trainer: Trainer) -> bool:
        return self._enabled and trainer.is_global_zero

    def _use_tqdm(self) -> bool:
        if self._tty is None:
            try:
                self._tty = bool(sys.stdout.isatty())
            except (AttributeError, ValueError):
                self._tty = False
        return self._tty

    def _new_tqdm(self, desc: str, total: int | None, position: int, leave: bool) -> Any:
        from tqdm import tqdm  # imported here: importing ember must not import tqdm

        return tqdm(
            desc=desc,
            total=total,
            position=position,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
        )

    @staticmethod
    def _epoch_label(trainer: Trainer) -> str:
        epoch, max_epochs = trainer.current_epoch + 1, trainer.max_epochs
        if max_epochs > 0:
            return f"epoch {epoch}/{max_epochs}"
        return f"epoch {epoch}"

    def _metrics(self, trainer: Trainer) -> dict[str, Any]:
        try:
            metrics = dict(trainer.progress_bar_metrics)
        except Exception:  # a display must never take training down
            return {}
        # The last validation run's values stay on display until the next one.
        for key, value in self._val_metrics.items():
            metrics.setdefault(key, value)
        return metrics

    def _plain_line(self, bar: BarCounter, metrics: dict[str, Any]) -> str:
        count = f"batch {bar.n}/{bar.total}" if bar.total is not None else f"batch {bar.n}"
        parts = [p for p in (bar.label, count, format_metrics(metrics)) if p]
        return _SEP.join(parts)

    def _print(self, line: str) -> None:
        print(line, file=sys.stdout, flush=True)

    def _close(self, bar: BarCounter | None) -> None:
        if bar is not None and bar.tqdm is not None:
            bar.tqdm.close()

    def _start_bar(self, label: str, total: int | None, position: int, leave: bool) -> BarCounter:
        bar = BarCounter(label, total)
        if self._use_tqdm():
            bar.tqdm = self._new_tqdm(label, total, position, leave)
        now = time.monotonic()
        self._next_refresh = now + self.refresh_rate_s
        if self._next_plain <= now:
            self._next_plain = now + self.plain_interval_s
        return bar

    def _redraw(self, bar: BarCounter, trainer: Trainer, with_metrics: bool) -> None:
        """Bring ``bar`` up to date (tqdm) or print a plain line."""
        metrics = self._metrics(trainer) if with_metrics else {}
        if bar.tqdm is not None:
            bar.tqdm.n = bar.n
            if with_metrics:
                bar.tqdm.set_postfix(metrics, refresh=False)
            bar.tqdm.refresh()
        else:
            self._print(self._plain_line(bar, metrics))

    def _tick(self, bar: BarCounter, trainer: Trainer, with_metrics: bool, plain: bool) -> None:
        """Called once per batch: a clock read and a comparison, nothing more,
        unless a redraw is due."""
        now = time.monotonic()
        if bar.tqdm is not None:
            if now >= self._next_refresh:
                self._next_refresh = now + self.refresh_rate_s
                self._redraw(bar, trainer, with_metrics)
        elif plain and now >= self._next_plain:
            self._next_plain = now + self.plain_interval_s
            self._redraw(bar, trainer, with_metrics)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if not self._active(trainer):
            return
        total = _total(trainer.num_training_batches)
        label = self._epoch_label(trainer)
        bar = self._train
        if bar is not None:
            # One bar for the whole fit, reset each epoch (``leave=True`` closes
            # each epoch's bar instead, so that it stays on screen).
            bar.label, bar.total, bar.n = label, total, 0
            if bar.tqdm is not None:
                bar.tqdm.reset(total=total)
                bar.tqdm.set_description(label, refresh=False)
            self._next_refresh = time.monotonic() + self.refresh_rate_s
            return
        self._train = self._start_bar(label, total, position=0, leave=True)

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar = self._train
        if bar is None:
            return
        bar.n = batch_idx + 1
        self._tick(bar, trainer, with_metrics=True, plain=True)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        bar = self._train
        if bar is None:
            return
        if bar.tqdm is not None:
            self._redraw(bar, trainer, with_metrics=True)
            if self.leave:
                bar.tqdm.close()  # keep one finished bar per epoch on screen
                self._train = None
        else:
            self._next_plain = time.monotonic() + self.plain_interval_s
            self._redraw(bar, trainer, with_metrics=True)

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        self._close(self._train)
        self._train = None

    # ------------------------------------------------------------------ evaluation
    def on_sanity_check_start(self, trainer: Trainer, module: Module) -> None:
        if not self._active(trainer) or not self._use_tqdm():
            return
        self._close(self._eval)
        self._eval = self._start_bar("sanity check", _total(trainer.num_sanity_val_batches), position=1, leave=False)

    def on_sanity_check_end(self, trainer: Trainer, module: Module) -> None:
        self._close(self._eval)
        self._eval = None

    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        if not self._active(trainer) or trainer.sanity_checking:
            return
        in_fit = trainer.state.fn == "fit"
        if in_fit and not self._use_tqdm():
            return  # plain mode: the epoch-end line carries the validation metrics
        self._close(self._eval)
        total = _total(trainer.num_val_batches)
        self._eval = self._start_bar("validation", total, position=1 if in_fit else 0, leave=self.leave and not in_fit)

    def on_validation_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        bar = self._eval
        if bar is None:
            return
        bar.n += 1
        self._tick(bar, trainer, with_metrics=False, plain=True)

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        self._val_metrics = {}

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        in_fit = trainer.state.fn == "fit"
        if in_fit and self._active(trainer) and not trainer.sanity_checking:
            # Once per validation run: keep its values for the training display.
            self._val_metrics = {}
            self._val_metrics = self._metrics(trainer)
        self._finish_eval(trainer, with_metrics=True)
        if self._train is not None and self._train.tqdm is not None and not trainer.sanity_checking:
            self._redraw(self._train, trainer, with_metrics=True)  # show the new validation metrics

    def _start_eval(self, trainer: Trainer, label: str, counts: list[float]) -> None:
        if not self._active(trainer):
            return
        self._close(self._eval)
        self._eval = self._start_bar(label, _total(counts), position=0, leave=self.leave)

    def _advance_eval(self, trainer: Trainer) -> None:
        bar = self._eval
        if bar is None:
            return
        bar.n += 1
        self._tick(bar, trainer, with_metrics=False, plain=True)

    def on_test_start(self, trainer: Trainer, module: Module) -> None:
        self._start_eval(trainer, "test", trainer.num_test_batches)

    def on_test_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._advance_eval(trainer)

    def on_test_end(self, trainer: Trainer, module: Module) -> None:
        self._finish_eval(trainer, with_metrics=True)

    def on_predict_start(self, trainer: Trainer, module: Module) -> None:
        self._start_eval(trainer, "predict", trainer.num_predict_batches)

    def on_predict_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._advance_eval(trainer)

    def on_predict_end(self, trainer: Trainer, module: Module) -> None:
        self._finish_eval(trainer, with_metrics=False)

    def _finish_eval(self, trainer: Trainer, with_metrics: bool) -> None:
        bar, self._eval = self._eval, None
        if bar is None:
            return
        if bar.tqdm is not None:
            bar.tqdm.n = bar.n
            bar.tqdm.refresh()
            bar.tqdm.close()
        else:
            self._redraw(bar, trainer, with_metrics)

    # ------------------------------------------------------------------ cleanup
    def _close_all(self) -> None:
        self._close(self._eval)
        self._close(self._train)
        self._eval = self._train = None

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        self._close_all()

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._close_all()
        self._tty = None  # look at stdout afresh next run

    def state_dict(self) -> dict[str, Any]:
        return {}


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "progress_bar", ProgressBar)
