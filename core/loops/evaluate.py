"""Validation, test and predict loops."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ember.loops.model_mode import batch_mover, enter_eval, exit_eval
from ember.results import Results, to_float
from ember.seed import rng_state

if TYPE_CHECKING:
    from ember.trainer import Trainer

# stage -> (hook prefix, epoch-hook infix, step method)
_NAMES = {
    "validate": ("validation", "validation_step"),
    "test": ("test", "test_step"),
    "predict": ("predict", "predict_step"),
}


def _context(trainer: Trainer) -> Any:
    return torch.inference_mode() if trainer.inference_mode else torch.no_grad()


def run_evaluation(
    trainer: Trainer,
    stage: str,
    loaders: list[Any],
    limits: list[float],
    sanity: bool = False,
    before_end: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One pass over ``loaders``; returns the epoch-level metrics sent to the
    loggers (tensors; what ``trainer.validate``/``test`` return, as in Lightning).
    ``before_end`` runs after the metrics are reduced, before the ``on_*_end``
    hooks (where checkpoints are usually written)."""
    module = trainer.module
    assert module is not None
    d = trainer._dispatch
    step_name = _NAMES[stage][1]
    state = trainer.state
    trainer.state.stage = "sanity_check" if sanity else stage
    results = Results(default_on_step=False, default_on_epoch=True)
    previous_results = module._results
    module._results = results
    trainer.state.eval_results = results
    was_training = module.training
    mode_stage = trainer.state.stage or stage
    enter_eval(module, mode_stage)
    # A checkpoint written during an evaluation inside fit (a preemption
    # within one batch) resumes by running it again from this random state.
    position = trainer.state.position if trainer.state.fn == "fit" else None
    if position is not None:
        position.val_rng = rng_state()
    strategy = trainer.strategy
    step = getattr(trainer.state.placed_module, step_name) if trainer.state.placed_module is module else getattr(module, step_name)
    hooks = d.evaluation(stage)
    batch_start = hooks.batch_start
    batch_end = hooks.batch_end
    several = len(loaders) > 1
    takes_idx = trainer._step_takes_idx.get(step_name, True)
    try:
        with _context(trainer):
            for fn in hooks.start:
                fn(trainer, module)
            for fn in hooks.epoch_start:
                fn(trainer, module)
            for dataloader_idx, (loader, limit) in enumerate(zip(loaders, limits, strict=False)):
                if limit <= 0:
                    continue
                results.dataloader_suffix = f"/dataloader_idx_{dataloader_idx}" if several else ""
                move = batch_mover(trainer, dataloader_idx)[0]
                for batch_idx, batch in enumerate(loader):
                    batch = move(batch)
                    results.new_batch(batch)
                    for fn in batch_start:
                        fn(trainer, module, batch, batch_idx, dataloader_idx)
                    with strategy.precision.forward_context():
                        if takes_idx:
                            output = step(batch, batch_idx, dataloader_idx) if several else step(batch, batch_idx)
                        else:
                            output = step(batch, dataloader_idx) if several else step(batch)
                    for fn in batch_end:
                        fn(trainer, module, output, batch, batch_idx, dataloader_idx)
                    if state.interrupt is not None:
                        state.run_interrupt()
                    if batch_idx + 1 >= limit:
                        break
            results.dataloader_suffix = ""
            for fn in hooks.epoch_end:
                fn(trainer, module)
            callback_values, logged = results.finalize_epoch(strategy.reduce if strategy.world_size > 1 else None)
            if not sanity:
                trainer.state.last_eval_progress = results.progress_bar_metrics()
                trainer.state.callback_metrics.update(callback_values)
                if logged:
                    trainer.log_metrics({**logged, "epoch": trainer.current_epoch})
            if position is not None:
                position.val_rng = None
            if before_end is not None:
                before_end()
            for fn in hooks.end:
                fn(trainer, module)
    finally:
        if position is not None:
            position.val_rng = None
        exit_eval(module, mode_stage, was_training)
        module._results = previous_results
        trainer.state.eval_results = None
    return logged


def run_eval_entry(trainer: Trainer, stage: str, verbose: bool) -> list[dict[str, float]]:
    """``trainer.validate`` / ``trainer.test``: one pass, then one dict per dataloader."""
    limits = trainer.num_val_batches if stage == "validate" else trainer.num_test_batches
    metrics = run_evaluation(trainer, stage, trainer.state.eval_loaders, limits)
    n = len(trainer.state.eval_loaders)
    per_loader: list[dict[str, float]] = []
    for i in range(n):
        suffix = f"/dataloader_idx_{i}"
        chosen = {k: to_float(v) for k, v in metrics.items() if n == 1 or k.endswith(suffix) or "/dataloader_idx_" not in k}
        per_loader.append(chosen)
    if verbose and trainer.is_global_zero:
        _print_results(stage, per_loader)
    return per_loader


def _print_results(stage: str, per_loader: list[dict[str, float]]) -> None:
    rows = [(f"{k}" + (f" [{i}]" if len(per_loader) > 1 else ""), v) for i, m in enumerate(per_loader) for k, v in sorted(m.items())]
    if not rows:
        return
    width = max(len(r[0]) for r in rows)
    print(f"{stage} results")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:.6g}")


def run_predict(trainer: Trainer, return_predictions: bool) -> list[Any] | None:
    module = trainer.module
    assert module is not None
    d = trainer._dispatch
    trainer.state.stage = "predict"
    was_training = module.training
    enter_eval(module, "predict")
    strategy = trainer.strategy
    several = len(trainer.state.predict_loaders) > 1
    takes_idx = trainer._step_takes_idx.get("predict_step", True)
    all_predictions: list[list[Any]] = []
    try:
        with _context(trainer):
            for fn in d.on_predict_start:
                fn(trainer, module)
            for fn in d.on_predict_epoch_start:
                fn(trainer, module)
            for dataloader_idx, (loader, limit) in enumerate(zip(trainer.state.predict_loaders, trainer.num_predict_batches, strict=False)):
                predictions: list[Any] = []
                all_predictions.append(predictions)
                if limit <= 0:
                    continue
                move = batch_mover(trainer, dataloader_idx)[0]
                for batch_idx, batch in enumerate(loader):
                    batch = move(batch)
                    for fn in d.on_predict_batch_start:
                        fn(trainer, module, batch, batch_idx, dataloader_idx)
                    with strategy.precision.forward_context():
                        if takes_idx:
                            output = module.predict_step(batch, batch_idx, dataloader_idx) if several else module.predict_step(batch, batch_idx)
                        else:
                            output = module.predict_step(batch, dataloader_idx) if several else module.predict_step(batch)
                    for fn in d.on_predict_batch_end:
                        fn(trainer, module, output, batch, batch_idx, dataloader_idx)
                    if trainer.state.interrupt is not None:
                        trainer.state.run_interrupt()
                    if return_predictions:
                        predictions.append(output)
                    if batch_idx + 1 >= limit:
                        break
            for fn in d.on_predict_epoch_end:
                fn(trainer, module)
            for fn in d.on_predict_end:
                fn(trainer, module)
    finally:
        exit_eval(module, "predict", was_training)
    if not return_predictions:
        return None
    return all_predictions if several else all_predictions[0]
