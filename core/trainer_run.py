"""How the Trainer runs an entry point, kept out of ``trainer.py``: ``_run``
attaches the module and hands the stage to the strategy's launcher (when it
has one) or runs it here; ``_run_stage`` sets up, runs the stage's loop and
tears down; set-up resolves the dispatch, restores a checkpoint, places the
module and builds the optimizers; teardown fires every ``teardown`` hook and
finalizes the loggers, even after one raised."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from ember import checkpointing, data
from ember.callback import Callback, Logger
from ember.compile import accept as accept_compiled
from ember.datamodule import DataModule
from ember.dispatch import Dispatch, note_origin
from ember.errors import Preempted, add_note
from ember.loops.signature import step_signatures
from ember.module import Module
from ember.optim import parse_optimizers
from ember.roles import LaunchesProcesses
from ember.strategies import setup_module_and_optimizers
from ember.trainer_compat import setup_compat


class TrainerRunMixin:
    """Mixed into :class:`ember.Trainer`: ``fit``/``validate``/``test``/``predict``
    call ``_run``; a launcher's worker processes call ``_run_stage``."""

    # ------------------------------------------------------------------ run orchestration
    def _run(
        self,
        fn: str,
        model: Module | None,
        datamodule: DataModule | None,
        loaders: dict[str, Any],
        ckpt_path: str | None,
        options: dict[str, Any],
    ) -> Any:
        model = model if model is not None else self.module
        if model is None:
            raise TypeError(f"trainer.{fn}() needs a model: pass an ember.Module.")
        model = accept_compiled(model, fn)  # torch.compile(module): the module inside, running compiled
        if not isinstance(model, Module):
            raise TypeError(
                f"trainer.{fn}() expects an ember.Module, got {type(model).__name__}. Subclass ember.Module (ported LightningModules: change the base class)."
            )
        if datamodule is not None and not isinstance(datamodule, DataModule):
            raise TypeError(f"datamodule must be an ember.DataModule, got {type(datamodule).__name__}.")
        same_module = model is self.module
        self.module = model
        self.datamodule = datamodule if datamodule is not None else (self.datamodule if same_module else None)
        model.trainer = self
        if self.datamodule is not None:
            self.datamodule.trainer = self
        self.state.begin(fn)
        self.interrupted = False
        self.state.explicit_loaders = loaders
        launcher = self.strategy.launcher if isinstance(self.strategy, LaunchesProcesses) else None
        if launcher is not None and launcher.should_launch():
            # e.g. ddp_spawn: the launcher starts the worker processes, each of
            # which calls _run_stage on its copy of this trainer.
            return launcher.launch(self._run_stage, fn, ckpt_path, options)
        return self._run_stage(fn, ckpt_path, options)

    def _run_stage(self, stage: str, ckpt_path: str | None, options: dict[str, Any]) -> Any:
        """Set up, run the loop of ``stage`` and tear down, in this process."""
        from ember.loops.evaluate import run_eval_entry, run_predict
        from ember.loops.fit import run_fit

        try:
            self._setup(stage, ckpt_path)
            if stage == "fit":
                result = run_fit(self)
            elif stage == "predict":
                result = run_predict(self, options["return_predictions"])
            else:
                result = run_eval_entry(self, stage, options["verbose"])
            self.state.status = "finished"
            if stage == "fit" and self.auto_resume and self.is_global_zero and os.path.exists(self.resume_checkpoint_path):
                # Finished: a relaunch of the same command must start afresh, not "resume" a completed run.
                self.strategy.remove_checkpoint(self.resume_checkpoint_path)
            return result
        except BaseException as exc:
            self.interrupted = isinstance(exc, (KeyboardInterrupt, Preempted))
            self.state.status = "interrupted" if self.interrupted else "failed"
            if not self.interrupted:
                self._note_origin(exc)
            self._fire_on_exception(exc)
            raise
        finally:
            try:
                self._teardown(stage)
            except Exception as exc:  # a teardown hook or a logger's finalize raised
                self._note_origin(exc)
                raise

    # ------------------------------------------------------------------ set-up
    def _setup(self, stage: str, ckpt_path: str | None) -> None:
        module = self.module
        assert module is not None
        if not self._env_ready:
            self.strategy.setup_environment()
            self._env_ready = True
        if self.strategy.local_rank == 0:
            if self.datamodule is not None:
                self.datamodule.prepare_data()
            module.prepare_data()
        self.strategy.barrier("prepare_data")
        extra = module.configure_callbacks()
        self._module_callbacks = [extra] if isinstance(extra, Callback) else list(extra or [])
        self._register_observers()
        self._dispatch = Dispatch(self._plugin_manager, module, Module, wrap=self.profiler.wrap if self.profiler is not None else None)
        if stage == "fit" and ckpt_path is None and self.auto_resume and os.path.exists(self.resume_checkpoint_path):
            ckpt_path = self.resume_checkpoint_path
        path = self._resolve_ckpt_path(ckpt_path, stage)
        if path is not None and getattr(self, "_weights_only", None) is False and os.path.isfile(path):
            checkpoint = checkpointing.load_checkpoint_file(path, weights_only=False)
        else:
            checkpoint = self.strategy.load_checkpoint(path) if path is not None else None
        if checkpoint is not None:
            checkpointing.check_compatible(checkpoint, path)  # type: ignore[arg-type]
            if stage == "fit":
                checkpointing.restore_observers(self, checkpoint)
        if self.datamodule is not None:
            self.datamodule.setup(stage)
        for fn in self._dispatch.setup:
            fn(self, module, stage)
        setup_compat(self, module)  # configure_model, sync_batchnorm, rank_zero_only.rank
        placed = self.strategy.setup_module(module)
        self.state.placed_module = placed
        self._clipping_overridden = type(module).configure_gradient_clipping is not Module.configure_gradient_clipping
        self._step_takes_idx = step_signatures(module)  # training_step(self, batch) is allowed, as in Lightning
        module._device = self.strategy.root_device
        data.collect(self, stage)
        if stage == "fit":
            self._configure_optimizers()
        self.state.begin_setup()
        if checkpoint is not None:
            self._restore(checkpoint, path, full=stage == "fit")  # type: ignore[arg-type]
        if stage != "predict" and self.is_global_zero and self.loggers:
            params = {**(self.datamodule.hparams_initial if self.datamodule is not None else {}), **module.hparams_initial}
            if params and getattr(module, "_log_hyperparams", True) and self.enable_autolog_hparams:
                for hook in self._dispatch.on_log_hyperparams:
                    hook(self, params)

    def _register_observers(self) -> None:
        pm = self._plugin_manager
        for name, plugin in list(pm.list_name_plugin()):
            if name.startswith(("callback:", "logger:")):
                pm.unregister(plugin, name)
        ordered = [*self.callbacks, *self.loggers]
        # pluggy calls the last-registered implementation first: registering in
        # reverse makes callbacks fire in the order the user listed them.
        for observer in reversed(ordered):
            pm.register_callback(observer, "logger" if isinstance(observer, Logger) else "callback")

    def _configure_optimizers(self) -> None:
        module = self.module
        assert module is not None
        optimizers, configs = parse_optimizers(module.configure_optimizers())
        if module.automatic_optimization:
            if not optimizers:
                raise ValueError(f"{type(module).__name__}.configure_optimizers() returned no optimizer; automatic optimization needs one.")
            if len(optimizers) > 1:
                raise ValueError(
                    f"{type(module).__name__}.configure_optimizers() returned {len(optimizers)} optimizers. Automatic optimization "
                    "steps one optimizer; set `self.automatic_optimization = False` and step them yourself in training_step."
                )
        # The strategy may train through another module (DeepSpeed's engine): see StrategyBase.setup_module_and_optimizers.
        self.state.placed_module, self.optimizers = setup_module_and_optimizers(self.strategy, self.state.placed_module, optimizers)
        self.lr_scheduler_configs = configs
        from ember.loops.optimization import OptimizerHandle

        self._optimizer_handles = [OptimizerHandle(self, opt) for opt in self.optimizers]

    # ------------------------------------------------------------------ teardown
    def _fire_on_exception(self, exc: BaseException) -> None:
        if self._dispatch is None:
            return
        if self.datamodule is not None:
            self.datamodule.on_exception(exc)
        for fn in self._dispatch.on_exception:
            try:
                fn(self, self.module, exc)
            except Exception as hook_exc:  # the original error matters more
                warnings.warn(f"An on_exception hook raised {type(hook_exc).__name__}: {hook_exc}", stacklevel=2)

    def _note_origin(self, exc: BaseException) -> None:
        """Name the hook and the object (callback, logger, plugin, module) ``exc`` came out of."""
        if isinstance(exc, Exception):
            note_origin(exc, self._dispatch, self._plugin_manager, (self.module, self.datamodule, *self.callbacks, *self.loggers))

    def _teardown(self, stage: str) -> None:
        module = self.module
        status = {"finished": "success", "interrupted": "interrupted"}.get(self.state.status, "failed")
        try:
            # Every teardown runs, even after one raised: a callback's failure
            # must not leave another's signal handlers or files in place.
            error: Exception | None = None
            hooks = list(self._dispatch.teardown) if self._dispatch is not None and module is not None else []
            if self.datamodule is not None:
                hooks.append(lambda _t, _m, stage: self.datamodule.teardown(stage))
            for fn in hooks:
                try:
                    fn(self, module, stage)
                except Exception as exc:
                    self._note_origin(exc)  # now, while `fn` is still the hook that raised
                    if error is None:
                        error = exc
                    else:
                        warnings.warn(f"teardown also raised {type(exc).__name__}: {exc}", stacklevel=2)
            if error is not None:
                raise error
        finally:
            if self.is_global_zero:
                _finalize_loggers(self.loggers, status)
            if module is not None:
                module._results = None
            self.state.stage = None


def _finalize_loggers(loggers: Sequence[Any], status: str) -> None:
    """``finalize`` every logger, so each writes what it buffered, even when
    one before it raises; the first error is raised afterwards, with a note
    naming the logger."""
    error: Exception | None = None
    for lg in loggers:
        try:
            lg.finalize(status)
        except Exception as exc:
            add_note(exc, f"raised by {type(lg).__name__}.finalize({status!r}); the other loggers were finalized")
            if error is None:
                error = exc
            else:
                warnings.warn(f"{type(lg).__name__}.finalize({status!r}) also raised {type(exc).__name__}: {exc}", stacklevel=3)
    if error is not None:
        raise error
