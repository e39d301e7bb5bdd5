"""Every hook the ember kernel emits.

This module is the contract between the kernel and its plugins. Each function below is a *hook
specification*: its name is the hook, its parameters are what the kernel passes, its docstring says
when it fires and what a return value means. Plugins implement hooks with :data:`ember.hookimpl`; a
:class:`ember.Callback` implements them simply by overriding the method of the same name.

Implementations may accept any prefix of the arguments (``def on_fit_start(self,
trainer)`` is fine); pluggy-style implementations may accept any subset by name.

Order: for every hook, the registered plugins and callbacks fire first, in the order the user listed
the callbacks, and the module's own method of the same name (where it has one) fires last.

Hooks marked **per-step** fire once per batch. The kernel resolves their implementations once at the
start of each run into a plain tuple, so a per-step hook that nobody implements costs nothing.

The hook reference in ``docs/reference/hooks.md`` is generated from this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    import torch

    from ember.module import Module
    from ember.roles import RoleRegistry
    from ember.stack.plugin_keys import StackKeys
    from ember.trainer import Trainer

hookspec = pluggy.HookspecMarker("ember")

#: Hooks that fire while ember assembles itself, not during a run.
REGISTRATION_HOOKS: frozenset[str] = frozenset({"register_roles", "add_commands"})

#: Hooks that fire once per batch; dispatched through prebuilt tuples.
PER_STEP_HOOKS: frozenset[str] = frozenset(
    {
        "on_train_batch_start",
        "on_train_batch_end",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_test_batch_start",
        "on_test_batch_end",
        "on_predict_batch_start",
        "on_predict_batch_end",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_before_zero_grad",
    }
)


# --------------------------------------------------------------------------- registration
@hookspec
def register_roles(registry: RoleRegistry) -> None:
    """Add named providers to ember's registries.

    Fires once each time a :class:`~ember.Trainer` resolves its stack, before
    any other hook, on every registered plugin.

    :param registry: call ``registry.add(kind, name, factory)`` where ``kind`` is one of
        ``"accelerator"``, ``"strategy"``, ``"precision"``, ``"checkpoint_io"``, ``"environment"``,
        ``"callback"``, ``"logger"`` and ``factory`` builds the provider (usually the class itself).
        Users then pick it by ``name`` in the Trainer arguments or the stack file.

    The return value is ignored.
    """


@hookspec
def add_commands(subparsers: argparse._SubParsersAction, stack_keys: StackKeys) -> None:
    """Add subcommands to ``ember`` and keys to its stacks (as ``pytest_addoption`` adds options).

    Fires when ``ember`` builds its parser (implementations taking ``subparsers``) and loads a
    stack (those taking ``stack_keys``), on the command plugins only (``ember.commands.registry``:
    ember's own and the ``ember.commands`` entry points, light modules). fsdp's ``ember checkpoint
    consolidate`` comes this way.

    :param subparsers: ``subparsers.add_parser(name)`` adds a command
        (``registry.subcommands(subparsers.choices["checkpoint"])`` reaches a
        group's); ``p.set_defaults(run=fn)``: ``ember`` exits with ``fn(args)``.
    :param stack_keys: ``stack_keys.add(name, help=, check=, build=)`` declares a top-level stack key;
        ``build(value)`` makes the plugin object a run gets (:mod:`ember.stack.plugin_keys`).

    The return value is ignored.
    """


# --------------------------------------------------------------------------- set-up and teardown
@hookspec
def setup(trainer: Trainer, module: Module, stage: str) -> None:
    """Fires at the beginning of ``fit``, ``validate``, ``test`` and ``predict``.

    It fires after the DataModule's ``setup(stage)`` and before the module is
    moved to its device and the optimizers are built.

    :param trainer: the running trainer.
    :param module: the user's module.
    :param stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
    """


@hookspec
def teardown(trainer: Trainer, module: Module, stage: str) -> None:
    """Fires at the very end of ``fit``, ``validate``, ``test`` and ``predict``,
    also when the run ended with an exception.

    :param trainer: the running trainer.
    :param module: the user's module.
    :param stage: the same value ``setup`` received.
    """


@hookspec
def on_exception(trainer: Trainer, module: Module, exception: BaseException) -> None:
    """Fires when a run raises (``KeyboardInterrupt`` included), before
    ``teardown``; the exception is re-raised afterwards.

    :param exception: what was raised.
    """


# --------------------------------------------------------------------------- fit
@hookspec
def on_fit_start(trainer: Trainer, module: Module) -> None:
    """Fires once at the start of ``fit``, after ``setup`` and after the module
    and its optimizers are on their device and any checkpoint is restored."""


@hookspec
def on_fit_end(trainer: Trainer, module: Module) -> None:
    """Fires once at the end of a ``fit`` that finished without an exception."""


@hookspec
def on_sanity_check_start(trainer: Trainer, module: Module) -> None:
    """Fires before the sanity check: the few validation batches (see
    ``num_sanity_val_steps``) run before training to catch bugs early."""


@hookspec
def on_sanity_check_end(trainer: Trainer, module: Module) -> None:
    """Fires after the sanity check; metrics it logged are discarded."""


@hookspec
def on_train_start(trainer: Trainer, module: Module) -> None:
    """Fires once when training begins, after the sanity check."""


@hookspec
def on_train_end(trainer: Trainer, module: Module) -> None:
    """Fires once when training ends, before ``on_fit_end``."""


@hookspec
def on_train_epoch_start(trainer: Trainer, module: Module) -> None:
    """Fires at the start of every training epoch, before its first batch.
    ``trainer.current_epoch`` is the epoch about to run."""


@hookspec
def on_train_epoch_end(trainer: Trainer, module: Module) -> None:
    """Fires at the end of every training epoch, after the validation that
    runs at the end of the epoch (if any). Epoch-level metrics logged during
    training are in ``trainer.callback_metrics`` by now."""


@hookspec
def on_train_batch_start(trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
    """**Per-step.** Fires before ``training_step`` for every batch.

    :param batch: the batch, already on the module's device.
    :param batch_idx: index of the batch within the epoch.

    The module's own ``on_train_batch_start`` may return ``-1`` to end the
    epoch early; return values of plugins are ignored.
    """


@hookspec
def on_train_batch_end(trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
    """**Per-step.** Fires after the training step of every batch, after the
    optimizer step when this batch completed an accumulation window.

    :param outputs: what ``training_step`` returned (``None`` when skipped), with the loss detached.
    :param batch: the batch.
    :param batch_idx: index of the batch within the epoch.
    """


@hookspec
def on_before_backward(trainer: Trainer, module: Module, loss: torch.Tensor) -> None:
    """**Per-step.** Fires before ``loss.backward()``.

    :param loss: the loss about to be back-propagated, already divided by
        ``accumulate_grad_batches``.
    """


@hookspec
def on_after_backward(trainer: Trainer, module: Module) -> None:
    """**Per-step.** Fires after the backward pass, before gradients are
    unscaled or clipped; gradients are on the parameters."""


@hookspec
def on_before_optimizer_step(trainer: Trainer, module: Module, optimizer: torch.optim.Optimizer) -> None:
    """**Per-step.** Fires before ``optimizer.step()`` once per accumulation
    window, after gradients are unscaled and before they are clipped.

    :param optimizer: the optimizer about to step.
    """


@hookspec
def on_before_zero_grad(trainer: Trainer, module: Module, optimizer: torch.optim.Optimizer) -> None:
    """**Per-step.** Fires before ``optimizer.zero_grad()``.

    :param optimizer: the optimizer whose gradients are about to be cleared.
    """


# --------------------------------------------------------------------------- evaluation
@hookspec
def on_validation_start(trainer: Trainer, module: Module) -> None:
    """Fires when a validation run begins (sanity check included), after the
    module was put in eval mode."""


@hookspec
def on_validation_end(trainer: Trainer, module: Module) -> None:
    """Fires when a validation run ends, after its epoch-level metrics are in
    ``trainer.callback_metrics``. ``ModelCheckpoint`` saves here."""


@hookspec
def on_validation_epoch_start(trainer: Trainer, module: Module) -> None:
    """Fires before the first validation batch of a validation run."""


@hookspec
def on_validation_epoch_end(trainer: Trainer, module: Module) -> None:
    """Fires after the last validation batch of a validation run, before the
    epoch-level metrics are reduced."""


@hookspec
def on_validation_batch_start(trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
    """**Per-step.** Fires before ``validation_step``.

    :param batch: the batch, on the module's device.
    :param batch_idx: index of the batch within its dataloader.
    :param dataloader_idx: which validation dataloader it came from. An
        implementation that does not declare this parameter does not get it.
    """


@hookspec
def on_validation_batch_end(trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
    """**Per-step.** Fires after ``validation_step``.

    :param outputs: what ``validation_step`` returned.
    :param batch: the batch.
    :param batch_idx: index of the batch within its dataloader.
    :param dataloader_idx: which validation dataloader it came from.
    """


@hookspec
def on_test_start(trainer: Trainer, module: Module) -> None:
    """Fires when ``trainer.test`` begins its loop, after the module was put in eval mode."""


@hookspec
def on_test_end(trainer: Trainer, module: Module) -> None:
    """Fires when the test loop ends, with its metrics in ``trainer.callback_metrics``."""


@hookspec
def on_test_epoch_start(trainer: Trainer, module: Module) -> None:
    """Fires after ``on_test_start``, before the first test batch of the first test dataloader."""


@hookspec
def on_test_epoch_end(trainer: Trainer, module: Module) -> None:
    """Fires after the last test batch, before epoch-level metrics are reduced."""


@hookspec
def on_test_batch_start(trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
    """**Per-step.** Fires before ``test_step``.

    :param batch: the batch, on the module's device.
    :param batch_idx: index of the batch within its dataloader.
    :param dataloader_idx: which test dataloader it came from. An
        implementation that does not declare this parameter does not get it.
    """


@hookspec
def on_test_batch_end(trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
    """**Per-step.** Fires after ``test_step``.

    :param outputs: what ``test_step`` returned.
    :param batch: the batch.
    :param batch_idx: index of the batch within its dataloader.
    :param dataloader_idx: which test dataloader it came from.
    """


@hookspec
def on_predict_start(trainer: Trainer, module: Module) -> None:
    """Fires when ``trainer.predict`` begins its loop."""


@hookspec
def on_predict_end(trainer: Trainer, module: Module) -> None:
    """Fires when the predict loop ends; ``trainer.predict`` returns next."""


@hookspec
def on_predict_epoch_start(trainer: Trainer, module: Module) -> None:
    """Fires after ``on_predict_start``, before the first predict batch of the
    first predict dataloader."""


@hookspec
def on_predict_epoch_end(trainer: Trainer, module: Module) -> None:
    """Fires after the last predict batch of every predict dataloader, before ``on_predict_end``."""


@hookspec
def on_predict_batch_start(trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
    """**Per-step.** Fires before ``predict_step``.

    :param batch: the batch, on the module's device.
    :param batch_idx: index of the batch within its dataloader.
    :param dataloader_idx: which predict dataloader it came from. An
        implementation that does not declare this parameter does not get it.
    """


@hookspec
def on_predict_batch_end(trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
    """**Per-step.** Fires after ``predict_step``.

    :param outputs: the prediction ``predict_step`` returned.
    :param batch: the batch.
    :param batch_idx: index of the batch within its dataloader.
    :param dataloader_idx: which predict dataloader it came from.
    """


# --------------------------------------------------------------------------- checkpoints
@hookspec
def on_save_checkpoint(trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
    """Fires while a checkpoint is being assembled, before it is written.

    :param checkpoint: the checkpoint dictionary; add entries to it to save state of your own.
        Values must be tensors, numbers, strings, ``None`` or lists/tuples/dicts of those, since
        checkpoints are loaded with ``torch.load(weights_only=True)``.
    """


@hookspec
def on_load_checkpoint(trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
    """Fires when a checkpoint is being restored, after the module's weights
    are loaded and before the optimizers and loop state are restored.

    :param checkpoint: the loaded checkpoint dictionary.
    """


# --------------------------------------------------------------------------- observers
@hookspec
def on_log_metrics(trainer: Trainer, metrics: dict[str, float], step: int) -> None:
    """Fires when logged metrics are due to be written: every ``log_every_n_steps`` optimizer steps
    for step-level values, and at the end of each epoch or evaluation run for epoch-level ones.
    Fires on the global-zero process only. Loggers implement it.

    :param metrics: metric name to value, already converted to Python floats.
    :param step: the global step the values belong to (monotonic during fit).
    """


@hookspec
def on_log_hyperparams(trainer: Trainer, params: dict[str, Any]) -> None:
    """Fires once at the start of ``fit``/``validate``/``test`` with the module's (and the
    DataModule's) saved hyperparameters, on the global-zero process only.

    :param params: hyperparameter name to value.
    """
