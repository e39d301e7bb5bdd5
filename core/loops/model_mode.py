"""What the loops do around the module that Lightning lets a module override:
switching train/eval mode for evaluation and moving batches to the device.

Resolved once per loop run: with no override, the loops get the plain
``module.eval()`` / ``strategy.batch_to_device`` and pay nothing per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.roles import MovesBatches

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

_EVAL_HOOKS = {
    "validate": ("on_validation_model_eval", "on_validation_model_train"),
    "sanity_check": ("on_validation_model_eval", "on_validation_model_train"),
    "test": ("on_test_model_eval", "on_test_model_train"),
    "predict": ("on_predict_model_eval", None),
}
_TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def overrides(obj: Any, name: str) -> bool:
    """Whether ``obj``'s class overrides ``name`` of its ember base class."""
    from ember.data import _overrides
    from ember.datamodule import DataModule
    from ember.module import Module

    return _overrides(obj, Module if isinstance(obj, Module) else DataModule, name)


def enter_eval(module: Module, stage: str) -> None:
    hook = _EVAL_HOOKS.get(stage, _EVAL_HOOKS["validate"])[0]
    if overrides(module, hook):
        getattr(module, hook)()
    else:
        module.eval()


def exit_eval(module: Module, stage: str, was_training: bool) -> None:
    hook = _EVAL_HOOKS.get(stage, _EVAL_HOOKS["validate"])[1]
    if hook is not None and was_training and overrides(module, hook):
        getattr(module, hook)()
    else:
        module.train(was_training)


def zero_grad_before_validation(module: Module) -> None:
    """``on_validation_model_zero_grad``, when the module overrides it."""
    if overrides(module, "on_validation_model_zero_grad"):
        module.on_validation_model_zero_grad()


def batch_mover(trainer: Trainer, dataloader_idx: int = 0) -> tuple[Callable[[Any], Any], bool]:
    """``(move, needed)``: the function that brings a batch of loader
    ``dataloader_idx`` to the device, and whether calling it can change anything."""
    strategy = trainer.strategy
    plain = strategy.batch_to_device
    owners = [obj for obj in (trainer.datamodule, trainer.module) if obj is not None]
    chosen = {}
    for name in _TRANSFER_HOOKS:
        owner = next((obj for obj in owners if overrides(obj, name)), None)
        if owner is not None:
            chosen[name] = getattr(owner, name)
    if not chosen:
        return plain, strategy.moves_batches if isinstance(strategy, MovesBatches) else True
    before = chosen.get("on_before_batch_transfer")
    transfer = chosen.get("transfer_batch_to_device")
    after = chosen.get("on_after_batch_transfer")
    device = strategy.root_device

    def move(batch: Any) -> Any:
        if before is not None:
            batch = before(batch, dataloader_idx)
        if transfer is not None:
            batch = transfer(batch, device, dataloader_idx)
        batch = plain(batch)  # the precision's input conversion still applies
        if after is not None:
            batch = after(batch, dataloader_idx)
        return batch

    return move, True
