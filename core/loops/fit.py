"""The fit loop: epochs of training batches, with validation in between."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch

from ember.checkpointing import pause_state
from ember.loops import prefetch
from ember.loops.evaluate import run_evaluation
from ember.loops.model_mode import batch_mover, overrides, zero_grad_before_validation
from ember.loops.optimization import AutomaticOptimization
from ember.loops.position import (
    EPOCH_END,
    FitPosition,
    batches_to_skip,
    epoch_snapshot,
    fast_forward,
    restore_epoch_snapshot,
    restore_grads,
    warn_if_not_exactly_resumable,
)
from ember.module import Module
from ember.results import Results
from ember.seed import isolated_rng, set_rng_state
from ember.trainer_compat import reload_dataloaders_if_due

if TYPE_CHECKING:
    from ember.trainer import Trainer


def run_fit(trainer: Trainer) -> None:
    module = trainer.module
    d = trainer._dispatch
    resumed = trainer._resuming
    trainer._resuming = False
    if not resumed:
        trainer.global_step = 0
        trainer.current_epoch = 0
        trainer.state.position = FitPosition()
    trainer._fit_started = time.monotonic()
    with torch.autograd.set_detect_anomaly(trainer.detect_anomaly) if trainer.detect_anomaly else contextlib.nullcontext():
        for fn in d.on_fit_start:
            fn(trainer, module)
        if trainer.num_sanity_val_steps and any(trainer.num_sanity_val_batches) and not resumed:
            _sanity_check(trainer)
        trainer.state.stage = "train"
        for fn in d.on_train_start:
            fn(trainer, module)
        while not _fit_done(trainer):
            if trainer.num_training_batches <= 0 or not _train_epoch(trainer):
                _stop_without_batches(trainer)
                break
        trainer.state.stage = "train"
        for fn in d.on_train_end:
            fn(trainer, module)
        for fn in d.on_fit_end:
            fn(trainer, module)


def _sanity_check(trainer: Trainer) -> None:
    module = trainer.module
    d = trainer._dispatch
    trainer.state.stage = "sanity_check"
    for fn in d.on_sanity_check_start:
        fn(trainer, module)
    with isolated_rng():  # training must be random in the same way with or without the check
        run_evaluation(trainer, "validate", trainer.state.val_loaders, trainer.num_sanity_val_batches, sanity=True)
    for fn in d.on_sanity_check_end:
        fn(trainer, module)


def _min_reached(trainer: Trainer) -> bool:
    """Whether a stop request may end training in the middle of this epoch."""
    return trainer.current_epoch >= trainer.min_epochs and trainer.global_step >= trainer.min_steps


def _limits_reached(trainer: Trainer, max_steps: int, max_time: float | None) -> bool:
    """``max_steps`` steps taken or ``max_time`` seconds spent."""
    return (max_steps != -1 and trainer.state.global_step >= max_steps) or (
        max_time is not None and time.monotonic() - trainer._fit_started >= max_time
    )


def _should_stop(trainer: Trainer, max_steps: int, max_time: float | None) -> bool:
    """The stop condition of fit, anywhere in an epoch: a limit reached, or a
    stop request (``should_stop``) once min_epochs/min_steps are satisfied.
    (The batch loop evaluates its two halves itself, to validate before
    honouring a stop request.)"""
    return _limits_reached(trainer, max_steps, max_time) or (trainer.state.should_stop and _min_reached(trainer))


def _fit_done(trainer: Trainer) -> bool:
    """:func:`_should_stop`, or, between epochs, ``max_epochs`` reached."""
    if trainer.max_epochs != -1 and trainer.current_epoch >= trainer.max_epochs:
        return True
    return _should_stop(trainer, trainer.max_steps, trainer.max_time)


def _stop_without_batches(trainer: Trainer) -> None:
    """An epoch without training batches changes nothing, so the next one
    would not either: stop instead of repeating it until ``max_steps``."""
    limit = trainer.limit_train_batches
    if trainer.num_training_batches > 0:
        why = f"the training dataloader yielded no batch in epoch {trainer.current_epoch - 1}, and the next epoch would not either"
        fix = "check train_dataloader() (an exhausted iterator, an empty dataset or shard)"
    elif limit is not None and limit <= 0:
        why, fix = f"limit_train_batches={limit!r} selects none", "set limit_train_batches to a number of batches >= 1 or a fraction in (0, 1] to train"
    else:
        why = "the training dataloader is empty (len 0)"
        fix = "check the dataset and batch size (drop_last=True with fewer samples than batch_size yields no batch)"
    if trainer.is_global_zero:
        warnings.warn(f"Trainer.fit stopped: no training batches: {why}; {fix}.", stacklevel=6)  # points at trainer.fit()


def _validation_enabled_this_epoch(trainer: Trainer) -> bool:
    every = trainer.check_val_every_n_epoch
    return bool(trainer.state.val_loaders) and any(trainer.num_val_batches) and (every is None or (trainer.current_epoch + 1) % every == 0)


def _train_epoch(trainer: Trainer) -> bool:
    """One training epoch; returns whether it saw a training batch."""
    if trainer.reload_dataloaders_every_n_epochs:
        reload_dataloaders_if_due(trainer)
    module = trainer.module
    assert module is not None
    d = trainer._dispatch
    strategy = trainer.strategy
    position = trainer.state.position
    position.paused = None  # training goes on after all
    resuming = position.resumes_inside_epoch
    results = Results(default_on_step=True, default_on_epoch=False)
    if resuming and position.results is not None:
        results.load_state_dict(position.results, module)
    trainer.state.train_results = results
    module._results = results
    module.train()
    trainer.state.stage = "train"
    epoch = trainer.current_epoch
    loader = trainer.state.train_loader
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
    automatic = module.automatic_optimization
    stepper = AutomaticOptimization(trainer) if automatic else None
    trainer._stepper = stepper
    if position.rng is not None and not resuming:
        set_rng_state(position.rng)  # resumed between epochs: continue from the saved state
    yielded = True
    if position.phase == EPOCH_END:
        # Resumed from a checkpoint written while on_train_epoch_end ran: the
        # hooks that already ran are not repeated.
        if position.rng is not None:
            set_rng_state(position.rng)
    else:
        for fn in d.on_train_epoch_start:
            fn(trainer, module)
        yielded = _run_batches(trainer, results, stepper, position if resuming else None)
        if _stopped_inside_epoch(trainer, position):
            # A checkpoint saved from here on (even after fit returns) continues this epoch.
            position.paused = pause_state(trainer)
        position.phase = EPOCH_END
        results.default_on_step, results.default_on_epoch = False, True
        for fn in d.on_train_epoch_end:
            fn(trainer, module)
    callback_values, logged = results.finalize_epoch(strategy.reduce if strategy.world_size > 1 else None)
    trainer.state.callback_metrics.update(callback_values)
    if logged:
        trainer.log_metrics({**logged, "epoch": epoch})
    _step_epoch_schedulers(trainer)
    trainer.current_epoch += 1
    trainer.state.position = FitPosition(paused=position.paused)
    return yielded


def _stopped_inside_epoch(trainer: Trainer, position: FitPosition) -> bool:
    """``max_steps`` ended fit with batches of this epoch left (known only for a loader with a length)."""
    limit = trainer.num_training_batches
    return trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps and limit != math.inf and position.batches_done < limit


def _run_batches(trainer: Trainer, results: Results, stepper: AutomaticOptimization | None, resume: FitPosition | None) -> bool:
    """The epoch's training batches; returns whether there was at least one."""
    module = trainer.module
    d = trainer._dispatch
    strategy = trainer.strategy
    state = trainer.state  # read on every step: one lookup here, not a property per read
    position = state.position
    loader = state.train_loader
    limit = trainer.num_training_batches
    val_enabled = _validation_enabled_this_epoch(trainer)
    val_every = trainer._val_check_batch
    log_every = trainer.log_every_n_steps
    log_steps = bool(trainer.loggers) and trainer.is_global_zero
    batch_start = d.on_train_batch_start
    batch_end = d.on_train_batch_end
    module_batch_start = type(module).on_train_batch_start is not Module.on_train_batch_start
    takes_idx = trainer._step_takes_idx.get("training_step", True)  # training_step(self, batch) is allowed
    max_steps = trainer.max_steps
    max_time = trainer.max_time
    has_limits = max_steps != -1 or max_time is not None  # else no per-step limit check at all
    to_device, moves_batches = batch_mover(trainer)

    # The random state that decides this epoch's order is taken right before
    # iter(): a resumed run restores it there, replays the order, skips what
    # was done, then restores the state of the moment the checkpoint was saved.
    skip = resume.batches_done if resume is not None else 0
    if resume is not None and resume.epoch_rng is not None:
        restore_epoch_snapshot(loader, resume.epoch_rng)
    else:
        position.epoch_rng = epoch_snapshot(loader)
    if resume is not None and skip:  # in samples: another batch size or world size continues at the sample, or refuses
        skip = batches_to_skip(loader, resume.data, skip, trainer.world_size, trainer.current_epoch, bool(resume.accumulated_grads))
    iterator = iter(loader)
    if skip:
        warn_if_not_exactly_resumable(loader, skip)
        if not fast_forward(loader, iterator, skip):
            warnings.warn(
                f"The training data has fewer than the {skip} batches the checkpoint had done in epoch {trainer.current_epoch}.",
                stacklevel=3,
            )
    prefetcher = prefetch.wrap(trainer, loader, iterator, to_device)  # None unless on (CUDA by default)
    if prefetcher is not None:
        iterator, moves_batches = prefetcher, False  # batches come out already moved
    if resume is not None:
        position.epoch_rng = resume.epoch_rng
        position.batches_done = skip
        if resume.rng is not None:
            set_rng_state(resume.rng)
        if resume.accumulated_grads and stepper is not None:
            restore_grads(module, resume.accumulated_grads)
            stepper.window_has_grads = stepper.mid_window = True
        if resume.val_pending:
            position.val_pending = True
            _validate_in_fit(trainer, results)
            if _should_stop(trainer, max_steps, max_time):
                return True

    # Fetch a batch only when it is about to be used (a lookahead only when the
    # loader's length is unknown): a dataset whose __getitem__ draws random
    # numbers then draws them in the same order relative to the steps
    # whatever the loop does around them, which exact resume relies on.
    known_length = limit != math.inf
    batch_idx = skip - 1
    pending = _END if known_length else next(iterator, _END)
    exhausted_early = False
    while batch_idx + 1 < limit:
        if known_length:
            batch = next(iterator, _END)
            if batch is _END:
                exhausted_early = batch_idx >= 0
                break
            is_last = batch_idx + 2 >= limit
        else:
            batch = pending
            if batch is _END:
                break
            pending = next(iterator, _END)
            is_last = pending is _END
        batch_idx += 1
        trainer.is_last_batch = is_last
        if moves_batches:
            batch = to_device(batch)
        results.batch = batch  # the batch size is inferred from it only if self.log needs it
        results._batch_size = None
        if batch_start:
            response = None
            for fn in batch_start:
                response = fn(trainer, module, batch, batch_idx)
            if module_batch_start and isinstance(response, int) and response == -1:
                break
        if stepper is not None:
            output, stepped = stepper.run(batch, batch_idx, is_last)
        else:
            before = state.global_step
            with strategy.precision.forward_context():
                output = module.training_step(batch, batch_idx) if takes_idx else module.training_step(batch)
            stepped = state.global_step != before
        if stepped and trainer.lr_scheduler_configs:
            _step_step_schedulers(trainer)
        stop_requested = state.should_stop and _min_reached(trainer)
        stopping = stop_requested or (has_limits and _limits_reached(trainer, max_steps, max_time))
        # Validate every `val_every` batches (at the epoch's end when that is
        # unknown), and before honouring a stop request, so that its metrics are fresh.
        validate_now = val_enabled and ((batch_idx + 1) % val_every == 0 or (val_every == math.inf and is_last) or stop_requested)
        # A checkpoint written from here on resumes after this batch.
        position.batches_done = batch_idx + 1
        position.val_pending = validate_now
        if batch_end or state.interrupt is not None:
            try:
                if batch_end:
                    outputs = _detached_outputs(output)
                    for fn in batch_end:
                        fn(trainer, module, outputs, batch, batch_idx)
                if state.interrupt is not None:
                    state.run_interrupt()
            except BaseException:
                # A batch-end hook or an interrupt ended the run (preemption
                # saves and raises here) after the step completed: its metrics
                # still reach the loggers, since a resumed run starts at the next step.
                if stepped and log_steps and state.global_step % log_every == 0:
                    with contextlib.suppress(Exception):  # the hook's error is the one to report
                        trainer._log_step_metrics()
                raise
        if stepped and log_steps and state.global_step % log_every == 0:
            trainer._log_step_metrics()
        if validate_now:
            _validate_in_fit(trainer, results)
        # Callbacks may have asked during validation, and max_time may have passed.
        if stopping or ((has_limits or state.should_stop) and _should_stop(trainer, max_steps, max_time)):
            break
    if exhausted_early and val_enabled:
        # The loader yielded fewer batches than len() promised, so the last one
        # was not known to be last: validate now, as the epoch's end requires.
        position.val_pending = True
        _validate_in_fit(trainer, results)
    return batch_idx >= 0 or skip > 0


_END = object()


def _detached_outputs(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return {"loss": output.detach()}
    if isinstance(output, dict):
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in output.items()}
    return output


def _validate_in_fit(trainer: Trainer, train_results: Results) -> None:
    module = trainer.module
    position = trainer.state.position

    def done() -> None:  # a checkpoint written in on_validation_end resumes after this validation
        position.val_pending = False

    zero_grad_before_validation(module)  # type: ignore[arg-type]
    run_evaluation(trainer, "validate", trainer.state.val_loaders, trainer.num_val_batches, sanity=False, before_end=done)
    module._results = train_results  # type: ignore[union-attr]
    trainer.state.stage = "train"
    if not overrides(module, "on_validation_model_train"):
        module.train()  # type: ignore[union-attr]


def _monitor_value(trainer: Trainer, monitor: str, strict: bool) -> Any:
    metrics = trainer.callback_metrics
    if monitor in metrics:
        return metrics[monitor]
    if strict:
        from ember.suggest import did_you_mean

        raise KeyError(
            f"The LR scheduler monitors {monitor!r}, which was not logged. Logged: {', '.join(sorted(metrics)) or 'nothing'}."
            f"{did_you_mean(monitor, metrics)} Log it with self.log({monitor!r}, ...) or set 'strict': False."
        )
    return None


def _step_scheduler(trainer: Trainer, config: Any) -> None:
    module = trainer.module
    metric = None
    if config.reduce_on_plateau:
        metric = _monitor_value(trainer, config.monitor, config.strict)
        if metric is None:
            return
    if type(module).lr_scheduler_step is Module.lr_scheduler_step:
        config.scheduler.step() if metric is None else config.scheduler.step(metric)
    else:
        module.lr_scheduler_step(config.scheduler, metric)  # type: ignore[union-attr]


def _step_step_schedulers(trainer: Trainer) -> None:
    if not trainer.module.automatic_optimization:  # type: ignore[union-attr]
        return  # manual optimization steps its own schedulers
    for config in trainer.lr_scheduler_configs:
        if config.interval == "step" and trainer.global_step % config.frequency == 0:
            _step_scheduler(trainer, config)


def _step_epoch_schedulers(trainer: Trainer) -> None:
    if not trainer.module.automatic_optimization:  # type: ignore[union-attr]
        return
    for config in trainer.lr_scheduler_configs:
        if config.interval == "epoch" and (trainer.current_epoch + 1) % config.frequency == 0:
            _step_scheduler(trainer, config)
