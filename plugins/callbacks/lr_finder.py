"""``LearningRateFinder``: a learning-rate range test before training.

Before the real run builds its optimizer, a deep copy of the module trains for
``num_training_steps`` optimizer steps while the learning rate rises from
``min_lr`` to ``max_lr`` (exponentially or linearly), with any LR scheduler the
module configures switched off. The loss of each step is smoothed with an
exponential moving average; the sweep stops early once the smoothed loss
exceeds ``early_stop_threshold`` times the best so far (or is not finite). The
suggestion is the rate where the smoothed loss falls fastest.

The real module never trains during the test and the random generators are
put back afterwards, so with ``update_attr=False`` the run is exactly the run
without the finder. With ``update_attr=True`` the suggestion is written to
``module.<attr_name>`` and/or ``module.hparams[attr_name]`` (wherever it
exists) before ``configure_optimizers`` runs, so the real optimizer and
schedulers are built with it.

It runs in the ``setup`` hook of ``fit`` (after the DataModule's ``setup``,
before the dataloaders and optimizers are built). :func:`lr_find` runs the same
test without a trainer run around it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ember.callback import Callback
from ember.plugin_manager import hookimpl
from ember.plugins.callbacks import _tuning
from ember.suggest import did_you_mean

if TYPE_CHECKING:
    from ember.datamodule import DataModule
    from ember.module import Module
    from ember.trainer import Trainer

_MODES = ("exponential", "linear")


@dataclass
class LRFinderResult:
    """What a range test measured: one entry per optimizer step."""

    lrs: list[float] = field(default_factory=list)
    #: smoothed (exponential moving average, bias-corrected) losses
    losses: list[float] = field(default_factory=list)
    #: the losses as measured (mean over the step's accumulated batches)
    raw_losses: list[float] = field(default_factory=list)
    mode: str = "exponential"
    #: whether the sweep ended early because the loss diverged
    diverged: bool = False

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The learning rate where the smoothed loss falls fastest, ignoring the
        first ``skip_begin`` and last ``skip_end`` points; ``None`` when fewer
        than three points remain or the loss never falls.

        The slope (against log-LR, or LR in linear mode) at each point is taken
        between the points ``w`` either side of it, ``w`` being about a
        twentieth of the curve, so that step-to-step noise does not pass for
        a descent."""
        n = len(self.losses)
        end = n - max(skip_end, 0)
        begin = min(max(skip_begin, 0), max(end - 3, 0))
        if end - begin < 3:
            return None
        lrs = torch.tensor(self.lrs, dtype=torch.float64)
        losses = torch.tensor(self.losses, dtype=torch.float64)
        x = lrs.log10() if self.mode == "exponential" else lrs
        w = max(1, round(n / 20))
        index = torch.arange(begin, end)
        lo, hi = (index - w).clamp(min=0), (index + w).clamp(max=n - 1)
        slope = (losses[hi] - losses[lo]) / (x[hi] - x[lo])
        slope = torch.where(torch.isfinite(slope), slope, torch.full_like(slope, math.inf))
        best = int(slope.argmin())
        if not slope[best] < 0:
            return None
        return float(lrs[begin + best])

    def plot(self, ax: Any = None, suggest: bool = True, skip_begin: int = 10, skip_end: int = 1) -> Any:
        """Draw loss against learning rate with matplotlib (``pip install
        'ember[plot]'``); marks the suggestion. Returns the figure."""
        import matplotlib.pyplot as plt

        fig = None
        if ax is None:
            fig, ax = plt.subplots()
        ax.plot(self.lrs, self.losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        lr = self.suggestion(skip_begin, skip_end) if suggest else None
        if lr is not None:
            i = self.lrs.index(lr)
            ax.plot(lr, self.losses[i], "o", color="red", label=f"suggestion {lr:.2g}")
            ax.legend()
        return fig if fig is not None else ax.figure


def lr_schedule(min_lr: float, max_lr: float, steps: int, mode: str) -> list[float]:
    """The learning rate of each of ``steps`` optimizer steps, ``min_lr`` to ``max_lr``."""
    if steps == 1:
        return [min_lr]
    if mode == "exponential":
        ratio = max_lr / min_lr
        return [min_lr * ratio ** (i / (steps - 1)) for i in range(steps)]
    return [min_lr + (max_lr - min_lr) * i / (steps - 1) for i in range(steps)]


def _loss_of(outputs: Any) -> float | None:
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
        return float(outputs.detach().float().cpu())
    if isinstance(outputs, (int, float)):
        return float(outputs)
    return None


class _Sweep(Callback):
    """Inside the inner run: set each step's learning rate, record the losses."""

    def __init__(self, schedule: list[float], mode: str, early_stop_threshold: float | None, beta: float = 0.98) -> None:
        self.schedule = schedule
        self.threshold = early_stop_threshold
        self.beta = beta
        self.result = LRFinderResult(mode=mode)
        self._pending: list[float] = []
        self._last_step = 0
        self._avg = 0.0
        self._best = math.inf

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        trainer.lr_scheduler_configs = []  # the sweep sets the rate itself

    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
        lr = self.schedule[min(trainer.global_step, len(self.schedule) - 1)]
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            self._pending.append(loss)
        step = trainer.global_step
        if step == self._last_step or not self._pending:
            return  # still accumulating
        self._last_step = step
        value = sum(self._pending) / len(self._pending)
        self._pending = []
        k = len(self.result.losses) + 1
        self._avg = self.beta * self._avg + (1 - self.beta) * value
        smoothed = self._avg / (1 - self.beta**k)
        r = self.result
        r.lrs.append(self.schedule[min(step - 1, len(self.schedule) - 1)])
        r.raw_losses.append(value)
        r.losses.append(smoothed)
        if not math.isfinite(smoothed) or (self.threshold is not None and k > 1 and smoothed > self.threshold * self._best):
            r.diverged = True
            trainer.should_stop = True
        self._best = min(self._best, smoothed)


def _run_sweep(
    trainer: Trainer,
    module: Module,
    train_dataloaders: Any,
    *,
    min_lr: float,
    max_lr: float,
    num_training_steps: int,
    mode: str,
    early_stop_threshold: float | None,
) -> LRFinderResult:
    sweep = _Sweep(lr_schedule(min_lr, max_lr, num_training_steps, mode), mode, early_stop_threshold)
    with _tuning.trial_scope() as root:
        clone = _tuning.copy_module(module)
        inner = _tuning.inner_trainer(trainer, [sweep], num_training_steps, root)
        try:
            inner.fit(clone, train_dataloaders=train_dataloaders)
        finally:
            del clone, inner
            _tuning.release_memory()
    if not sweep.result.losses:
        raise RuntimeError(
            f"LearningRateFinder recorded no loss: {type(module).__name__}.training_step must return the loss "
            "(a tensor or a dict with 'loss') and the training data must not be empty."
        )
    return sweep.result


def _check_args(min_lr: float, max_lr: float, num_training_steps: int, mode: str, early_stop_threshold: float | None) -> None:
    if mode not in _MODES:
        raise ValueError(f"LearningRateFinder(mode={mode!r}) must be 'exponential' or 'linear'.{did_you_mean(str(mode), _MODES)}")
    if not (0 < min_lr < max_lr):
        raise ValueError(f"LearningRateFinder needs 0 < min_lr < max_lr; got min_lr={min_lr}, max_lr={max_lr}.")
    if num_training_steps < 2:
        raise ValueError(f"LearningRateFinder(num_training_steps={num_training_steps}) must be at least 2.")
    if early_stop_threshold is not None and early_stop_threshold <= 1:
        raise ValueError(f"LearningRateFinder(early_stop_threshold={early_stop_threshold}) must be above 1 (or None to never stop early).")


class LearningRateFinder(Callback):
    """Find a good initial learning rate with a range test before training.

    :param min_lr: the rate of the first step.
    :param max_lr: the rate of the last step.
    :param num_training_steps: optimizer steps the test takes (fewer when the loss diverges).
    :param mode: ``"exponential"`` (even steps in log-LR) or ``"linear"``.
    :param early_stop_threshold: stop once the smoothed loss exceeds this many
        times its best; ``None`` never stops early.
    :param update_attr: write the suggestion to the module before its optimizer is built.
    :param attr_name: where: ``module.<attr_name>`` and/or ``module.hparams[attr_name]``;
        ``""`` (the default) finds ``lr`` or else ``learning_rate``.

    After ``fit``: :attr:`results` (``lrs``, ``losses``) and :meth:`suggestion`.
    """

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        _check_args(min_lr, max_lr, num_training_steps, mode, early_stop_threshold)
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.num_training_steps = num_training_steps
        self.mode = mode
        self.early_stop_threshold = early_stop_threshold
        self.update_attr = update_attr
        self.attr_name = attr_name
        self.results: LRFinderResult | None = None
        self.optimal_lr: float | None = None

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The suggested learning rate (``None`` before a test has run)."""
        return self.results.suggestion(skip_begin, skip_end) if self.results is not None else None

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage != "fit" or _tuning.is_tuning_copy(module):
            return
        self.lr_find(trainer, module)

    def lr_find(self, trainer: Trainer, module: Module) -> float | None:
        """Run the test for ``trainer``'s coming fit of ``module``; returns the suggestion."""
        if not self.attr_name:
            self.attr_name = next((n for n in ("lr", "learning_rate") if _tuning.has_attr(module, n)), "lr")
        if self.update_attr and not _tuning.has_attr(module, self.attr_name):
            raise AttributeError(
                f"LearningRateFinder(update_attr=True) writes the learning rate to {type(module).__name__}.{self.attr_name} "
                f"or its hparams[{self.attr_name!r}], and it has neither. Read the rate from there in configure_optimizers "
                "(e.g. save_hyperparameters() with an `lr` argument), pass attr_name=, or update_attr=False."
            )
        self.results = _run_sweep(
            trainer,
            module,
            _tuning.train_loader_for_trial(trainer, module),
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            num_training_steps=self.num_training_steps,
            mode=self.mode,
            early_stop_threshold=self.early_stop_threshold,
        )
        lr = self.results.suggestion()
        if trainer.world_size > 1:
            lr = trainer.strategy.broadcast(lr, src=0)  # every process trains with global zero's rate
        self.optimal_lr = lr
        if lr is None:
            warnings.warn(
                f"LearningRateFinder could not suggest a learning rate from {len(self.results.losses)} points "
                "(too few, or the loss never fell); the module is left as it was. Try more num_training_steps or a wider range.",
                stacklevel=2,
            )
        elif self.update_attr:
            _tuning.set_attr(module, self.attr_name, lr)
        return lr


def lr_find(
    module: Module,
    train_dataloaders: Any = None,
    datamodule: DataModule | None = None,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 1,
    num_training_steps: int = 100,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
    **trainer_kwargs: Any,
) -> LRFinderResult:
    """Run a range test on a copy of ``module`` and return what it measured
    (nothing about ``module`` changes; call ``.suggestion()`` on the result).
    ``trainer_kwargs`` choose the device (``accelerator=``, ``devices=``,
    ``precision=``) as for :class:`ember.Trainer`."""
    import ember

    _check_args(min_lr, max_lr, num_training_steps, mode, early_stop_threshold)
    if train_dataloaders is None and datamodule is not None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        train_dataloaders = datamodule.train_dataloader()
    placement = ember.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs
    )  # only to resolve the device and precision; it runs nothing
    return _run_sweep(
        placement,
        module,
        train_dataloaders,
        min_lr=min_lr,
        max_lr=max_lr,
        num_training_steps=num_training_steps,
        mode=mode,
        early_stop_threshold=early_stop_threshold,
    )


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "lr_finder", LearningRateFinder)
