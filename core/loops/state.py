"""What a run is: one typed record, :class:`RunState`, held by the Trainer as
``trainer.state``.

Everything that changes while ``fit``/``validate``/``test``/``predict`` runs
lives here, and only here: which entry point and stage are running and how
they ended, the step and epoch counters, the position inside the fit (for
exact resume), the dataloaders of the run, the metrics, and the module as the
strategy placed it. The Trainer's configuration (its arguments, roles and
callbacks) stays on the Trainer.

Plugins read the run through the Trainer's documented properties
(:class:`RunStateView`: ``trainer.global_step``, ``trainer.callback_metrics``,
``trainer.train_dataloader``, ``trainer.model``, ...), which read this record;
the kernel's loops use the record directly. A launcher that runs the stage in
other processes ships a :meth:`RunState.shippable` copy back
(:mod:`ember.launch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ember.loops.position import FitPosition


@dataclass(eq=False)
class RunState:
    """The state of a trainer's run. Lightning's ``trainer.state`` fields
    (``fn``, ``stage``, ``status``) come first; counters persist from one run
    of the same trainer to the next, as ``trainer.global_step`` always has."""

    fn: str | None = None  #: "fit", "validate", "test", "predict"
    stage: str | None = None  #: "train", "sanity_check", "validate", "test", "predict"
    status: str = "initializing"  #: "running", "finished", "interrupted", "failed"

    global_step: int = 0  #: optimizer steps taken
    current_epoch: int = 0
    should_stop: bool = False  #: a callback asked fit to stop at the next check
    position: FitPosition = field(default_factory=FitPosition)  #: where inside the fit (exact resume)

    explicit_loaders: dict[str, Any] = field(default_factory=dict)  #: what the entry point was given, by kind
    train_loader: Any = None  #: the training loader, as the strategy adapted it
    val_loaders: list[Any] = field(default_factory=list)  #: fit's validation loaders
    eval_loaders: list[Any] = field(default_factory=list)  #: validate()'s or test()'s loaders
    predict_loaders: list[Any] = field(default_factory=list)

    callback_metrics: dict[str, Any] = field(default_factory=dict)  #: finished values (tensors)
    logged_metrics: dict[str, float] = field(default_factory=dict)  #: what the loggers last received
    last_eval_progress: dict[str, Any] = field(default_factory=dict)  #: the last evaluation's prog_bar values
    train_results: Any = None  #: the running epoch's :class:`ember.results.Results` (live values)
    eval_results: Any = None  #: the running evaluation's Results

    placed_module: Any = None  #: the module the loop calls (DDP-wrapped, DeepSpeed's engine, ...)

    #: A callable the loops run once at their next safe point: after the
    #: ``on_train_batch_end`` hooks of the batch in progress, or after the
    #: ``on_*_batch_end`` hooks of a validation, test or predict batch. Set it from a signal
    #: handler or another thread to act between batches without implementing
    #: a per-batch hook (:class:`~ember.plugins.callbacks.fault_tolerance.FaultTolerance`
    #: saves on preemption this way); it is cleared before it runs, and an
    #: exception it raises ends the run as one raised by a hook would.
    interrupt: Callable[[], Any] | None = None

    def begin(self, fn: str) -> None:
        """A new entry point starts: ``fn`` is running, no stage yet, no stop requested."""
        self.fn, self.stage, self.status, self.should_stop = fn, None, "running", False
        self.interrupt = None

    def run_interrupt(self) -> None:
        """Run and clear :attr:`interrupt` (the loops call this when it is set)."""
        interrupt, self.interrupt = self.interrupt, None
        if interrupt is not None:
            interrupt()

    def begin_setup(self) -> None:
        """The metrics of an earlier run are gone once a run sets up."""
        self.callback_metrics, self.last_eval_progress = {}, {}
        self.train_results = self.eval_results = None

    def shippable(self, callback_metrics: dict[str, Any], progress_bar_metrics: dict[str, Any]) -> RunState:
        """A copy to send to another process: counters, status and metrics
        (``callback_metrics`` and ``progress_bar_metrics`` as read, tensors
        on the CPU); no dataloaders, no placed module, no live results."""
        return replace(
            self,
            position=FitPosition(),
            explicit_loaders={},
            train_loader=None,
            val_loaders=[],
            eval_loaders=[],
            predict_loaders=[],
            callback_metrics=dict(callback_metrics),
            logged_metrics=dict(self.logged_metrics),
            last_eval_progress=dict(progress_bar_metrics),
            train_results=None,
            eval_results=None,
            placed_module=None,
            interrupt=None,
        )

    def absorb(self, shipped: RunState) -> None:
        """Take what a worker's :meth:`shippable` copy holds (the caller's
        dataloaders and module stay)."""
        self.fn, self.stage, self.status = shipped.fn, shipped.stage, shipped.status
        self.global_step, self.current_epoch, self.should_stop = shipped.global_step, shipped.current_epoch, shipped.should_stop
        self.callback_metrics = dict(shipped.callback_metrics)
        self.logged_metrics = dict(shipped.logged_metrics)
        self.last_eval_progress = dict(shipped.last_eval_progress)
        self.train_results = self.eval_results = None


class RunStateView:
    """The Trainer's properties over its :class:`RunState` (``self.state``)
    that plugins use. Counters and ``should_stop`` are writable, as in
    Lightning; the rest is read-only."""

    state: RunState

    @property
    def global_step(self) -> int:
        """Optimizer steps taken (all optimizers' steps count once per step)."""
        return self.state.global_step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.state.global_step = value

    @property
    def current_epoch(self) -> int:
        """The epoch running now (0-based); after fit, the number of epochs done."""
        return self.state.current_epoch

    @current_epoch.setter
    def current_epoch(self, value: int) -> None:
        self.state.current_epoch = value

    @property
    def should_stop(self) -> bool:
        """Set it to ``True`` to stop fit at the next check (after this batch, or at the epoch's end)."""
        return self.state.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self.state.should_stop = value

    @property
    def logged_metrics(self) -> dict[str, float]:
        """What the loggers last received, as floats."""
        return self.state.logged_metrics

    @logged_metrics.setter
    def logged_metrics(self, value: dict[str, float]) -> None:
        self.state.logged_metrics = value
