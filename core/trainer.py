"""The ``Trainer``: resolves the stack once, then runs the loops."""

from __future__ import annotations

import datetime
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ember import checkpointing, data, resolve, trainer_args
from ember.callback import Callback, Logger
from ember.compile import accept as accept_compiled
from ember.datamodule import DataModule
from ember.dispatch import Dispatch, note_origin
from ember.errors import Preempted, add_note
from ember.loops.position import position_from_state, position_state
from ember.loops.signature import step_signatures
from ember.loops.state import RunState, RunStateView
from ember.module import Module
from ember.optim import LRSchedulerConfig, parse_optimizers
from ember.plugin_manager import AutoloadSettings, PluginSource, default_plugin_manager
from ember.results import to_float
from ember.roles import DistributesSamplers, LaunchesProcesses, ReplacesTrainingModule, RoleRegistry, StopsTraining
from ember.trainer_compat import TrainerCompatMixin, barebones_arguments, default_logger_name, setup_compat

_DEFAULT_SLOTS = (
    ("progress_bar", "enable_progress_bar"),
    ("model_summary", "enable_model_summary"),
    ("model_checkpoint", "enable_checkpointing"),
    ("fault_tolerance", "enable_fault_tolerance"),
)


#: Lightning's name for what ``trainer.state`` holds: here, the whole run's state.
TrainerState = RunState


class Trainer(RunStateView, TrainerCompatMixin):
    """Runs ``fit``, ``validate``, ``test`` and ``predict`` for a :class:`Module`.

    Argument names and defaults follow Lightning's ``Trainer``. ember-specific:
    ``disable_plugins`` (plugin names never registered), ``autoload_plugins``
    (``False`` loads no entry-point plugin unless named in ``plugins``).
    Every argument's accepted values are in :mod:`ember.trainer_args`.
    """

    #: Training batches copied to the device ahead of their step (see
    #: :mod:`ember.loops.prefetch`): ``None`` on for CUDA and off elsewhere,
    #: ``False`` off, ``True`` on, an ``int`` on with that many batches ahead.
    device_prefetch: bool | int | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Trainer:
        if args or kwargs:
            trainer_args.check_names(cls, args, kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        accelerator: str | Any = "auto",
        strategy: str | Any = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        precision: str | int | None = None,
        logger: bool | Logger | list[Logger] | None = None,
        callbacks: Callback | list[Callback] | None = None,
        fast_dev_run: bool | int = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: str | datetime.timedelta | dict[str, int] | float | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        enable_fault_tolerance: bool | None = None,
        auto_resume: bool = False,
        profiler: str | Any | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        detect_anomaly: bool = False,
        default_root_dir: str | os.PathLike[str] | None = None,
        plugins: Any = None,
        disable_plugins: Sequence[str] | None = None,
        autoload_plugins: bool | None = None,
        use_distributed_sampler: bool = True,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        barebones: bool = False,
        enable_autolog_hparams: bool = True,
    ) -> None:
        trainer_args.check_arguments(locals())
        if barebones:
            enable_checkpointing, logger, enable_progress_bar, enable_model_summary, num_sanity_val_steps = barebones_arguments(locals())
        self.barebones = barebones
        self.sync_batchnorm = sync_batchnorm
        self.use_distributed_sampler = use_distributed_sampler
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.enable_autolog_hparams = enable_autolog_hparams
        self.default_root_dir = os.fspath(default_root_dir) if default_root_dir is not None else os.getcwd()
        self.fast_dev_run = dev = int(fast_dev_run)
        self.max_epochs = 1 if dev else (max_epochs if max_epochs is not None else (1000 if max_steps == -1 and max_time is None else -1))
        self.min_epochs = min_epochs or 0
        self.max_steps = dev if dev else max_steps
        self.min_steps = min_steps or 0
        self.max_time = trainer_args.parse_max_time(max_time)
        self.overfit_batches = overfit_batches
        limit_default = dev if dev else (overfit_batches if overfit_batches else None)
        self.limit_train_batches = limit_default if limit_default is not None else limit_train_batches
        self.limit_val_batches = limit_default if limit_default is not None else limit_val_batches
        self.limit_test_batches = dev if dev else limit_test_batches
        self.limit_predict_batches = dev if dev else limit_predict_batches
        self.val_check_interval = 1.0 if dev or val_check_interval is None else val_check_interval
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = 0 if dev else (2 if num_sanity_val_steps is None else num_sanity_val_steps)
        self.log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm or "norm"
        self.inference_mode = inference_mode
        self.detect_anomaly = detect_anomaly
        self.num_nodes = num_nodes
        self.enable_progress_bar = True if enable_progress_bar is None else enable_progress_bar
        self.enable_model_summary = True if enable_model_summary is None else enable_model_summary
        self.enable_checkpointing = (True if enable_checkpointing is None else enable_checkpointing) and not dev
        self.enable_fault_tolerance = (True if enable_fault_tolerance is None else enable_fault_tolerance) and not dev
        self.auto_resume = auto_resume
        self._apply_determinism(deterministic, benchmark)

        # -- plugins and roles, resolved once ------------------------------------
        role_overrides, hook_plugins, enable_names = resolve.split_plugins(plugins)
        settings = AutoloadSettings.from_env().merged(enable=enable_names, disable=disable_plugins or (), autoload=autoload_plugins)
        self._plugin_manager = pm = default_plugin_manager(settings)
        for obj in hook_plugins:
            pm.register(obj, source=PluginSource("explicit", distribution="", target=type(obj).__module__))
        pm.warn_failures()
        self._registry = registry = pm.build_registry()
        self.strategy = resolve.resolve_strategy(registry, accelerator, strategy, devices, precision, role_overrides, num_nodes)
        self.accelerator = self.strategy.accelerator
        if not use_distributed_sampler and isinstance(self.strategy, DistributesSamplers):
            self.strategy.use_distributed_sampler = False
        self.precision = self.strategy.precision.name

        # -- observers ------------------------------------------------------------
        user_callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
        self._user_callbacks = user_callbacks
        self._default_callbacks = self._create_default_callbacks(registry, user_callbacks)
        self.profiler = registry.create("profiler", profiler) if isinstance(profiler, str) else profiler
        if isinstance(self.profiler, Callback) and self.profiler not in user_callbacks:
            self._default_callbacks.append(self.profiler)
        self._module_callbacks: list[Callback] = []
        if dev or logger is False:
            self.loggers: list[Logger] = []
        elif logger is None or logger is True:
            self.loggers = [registry.create("logger", default_logger_name(registry), save_dir=self.default_root_dir)]
        else:
            self.loggers = [logger] if isinstance(logger, Logger) else list(logger)

        # -- run state --------------------------------------------------------------
        self.state = RunState()  # what a run is: stage, counters, fit position, loaders, metrics, placed module
        self.module: Module | None = None
        self.datamodule: DataModule | None = None
        self.optimizers: list[Any] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self._optimizer_handles: list[Any] = []
        self._dispatch: Any = None
        self._env_ready = False
        self._resuming = False
        self._stepper: Any = None
        self._step_takes_idx: dict[str, bool] = {}
        self._ckpt_path: str | None = None
        self.num_training_batches: float = 0
        self.num_val_batches: list[float] = []
        self.num_sanity_val_batches: list[float] = []
        self.num_test_batches: list[float] = []
        self.num_predict_batches: list[float] = []
        self.interrupted = False

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _apply_determinism(deterministic: bool | str | None, benchmark: bool | None) -> None:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        if benchmark is not None and hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = bool(benchmark) and not deterministic

    def _create_default_callbacks(self, registry: RoleRegistry, user_callbacks: list[Callback]) -> list[Callback]:
        filled = {cb.fills for cb in user_callbacks if cb.fills}
        defaults = []
        for slot, flag in _DEFAULT_SLOTS:
            if slot in filled or not getattr(self, flag):
                continue
            if slot not in registry.names("callback"):
                # The plugin that provides this default was disabled (or is not
                # installed): disabling it is how a user opts out, so say nothing.
                continue
            defaults.append(registry.create("callback", slot))
        return defaults

    # ------------------------------------------------------------------ public properties
    @property
    def callbacks(self) -> list[Callback]:
        """Every callback of this trainer, in firing order (loggers excluded)."""
        module_types = {type(cb) for cb in self._module_callbacks}
        ordered = [cb for cb in self._user_callbacks if type(cb) not in module_types] + self._module_callbacks
        ordered += [cb for cb in self._default_callbacks if cb.fills not in {c.fills for c in ordered if c.fills}]
        # Checkpointing last, so it sees everything the other callbacks logged.
        return [cb for cb in ordered if cb.fills != "model_checkpoint"] + [cb for cb in ordered if cb.fills == "model_checkpoint"]

    @property
    def resume_checkpoint_path(self) -> str:
        """Where a preempted run saves, and where ``auto_resume`` looks: a fixed
        path under ``default_root_dir``, so a relaunch of the same command finds it."""
        return os.path.join(self.default_root_dir, "checkpoints", "resume.ckpt")

    @property
    def lightning_module(self) -> Module | None:
        return self.module

    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str:
        for lg in self.loggers:
            if lg.log_dir:
                return lg.log_dir
        return self.default_root_dir

    @property
    def checkpoint_callbacks(self) -> list[Callback]:
        return [cb for cb in self.callbacks if cb.fills == "model_checkpoint"]

    @property
    def checkpoint_callback(self) -> Callback | None:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callback(self) -> Callback | None:
        """The first callback that can stop training early (a :class:`~ember.roles.StopsTraining`)."""
        return next((cb for cb in self.callbacks if isinstance(cb, StopsTraining)), None)

    @property
    def progress_bar_callback(self) -> Callback | None:
        return next((cb for cb in self.callbacks if cb.fills == "progress_bar"), None)

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def training(self) -> bool:
        return self.state.stage == "train"

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == "sanity_check"

    @property
    def validating(self) -> bool:
        return self.state.stage == "validate"

    @property
    def testing(self) -> bool:
        return self.state.stage == "test"

    @property
    def predicting(self) -> bool:
        return self.state.stage == "predict"

    @property
    def callback_metrics(self) -> dict[str, Any]:
        """Latest value of everything logged (tensors; nothing is synchronised to read them)."""
        metrics = dict(self.state.callback_metrics)
        if self.state.train_results is not None:
            metrics.update(self.state.train_results.live_metrics())
        return metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """``prog_bar=True`` metrics as floats. Converting synchronises with the
        device, so read this only when displaying."""
        merged: dict[str, Any] = dict(self.state.last_eval_progress)
        for results in (self.state.train_results, self.state.eval_results):
            if results is not None:
                merged.update(results.progress_bar_metrics())
        return {k: to_float(v) for k, v in merged.items()}

    @property
    def estimated_stepping_batches(self) -> float:
        """Optimizer steps the whole fit will take (``inf`` when unknowable)."""
        per_epoch = (
            math.ceil(self.num_training_batches / self.accumulate_grad_batches) if self.num_training_batches != math.inf else math.inf
        )
        by_epochs = per_epoch * self.max_epochs if self.max_epochs != -1 else math.inf
        return min(by_epochs, self.max_steps) if self.max_steps != -1 else by_epochs

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Send metrics to every logger (global zero only). Tensors are converted here."""
        if not self.loggers or not metrics or not self.is_global_zero:
            return
        floats = {k: to_float(v) for k, v in metrics.items()}
        step = self.global_step if step is None else step
        self.logged_metrics.update(floats)
        for fn in self._dispatch.on_log_metrics if self._dispatch is not None else ():
            fn(self, floats, step)

    def _backward(self, loss: torch.Tensor) -> None:
        from ember.loops.optimization import backward

        backward(self, loss)

    def _log_step_metrics(self) -> None:
        values = self.state.train_results.step_values()  # type: ignore[union-attr]
        if values:
            values["epoch"] = self.current_epoch
            self.log_metrics(values)

    # ------------------------------------------------------------------ the four entry points
    def fit(
        self,
        model: Module,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: DataModule | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train ``model``. Dataloaders come from the arguments, the DataModule or
        the module's ``*_dataloader`` methods. ``ckpt_path`` (a path, ``"last"``
        or ``"best"``) resumes training from a checkpoint; ``weights_only=False``
        lets it hold arbitrary pickled objects (only for files you trust)."""
        if isinstance(train_dataloaders, DataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        self._weights_only = weights_only
        self._run("fit", model, datamodule, {"train": train_dataloaders, "val": val_dataloaders}, ckpt_path, {})

    def validate(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run one validation pass; returns one dict of metrics per dataloader."""
        self._weights_only = weights_only
        return self._evaluate("validate", model, dataloaders, ckpt_path, verbose, datamodule)

    def test(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run one test pass; returns one dict of metrics per dataloader."""
        self._weights_only = weights_only
        return self._evaluate("test", model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        datamodule: DataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
    ) -> list[Any] | None:
        """Run ``predict_step`` over the predict dataloader(s); returns the
        predictions (a list per dataloader when there are several).
        ``return_predictions=None`` means ``True``."""
        self._weights_only = weights_only
        return_predictions = True if return_predictions is None else return_predictions
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        return self._run("predict", model, datamodule, {"predict": dataloaders}, ckpt_path, {"return_predictions": return_predictions})

    def _evaluate(
        self, fn: str, model: Module | None, dataloaders: Any, ckpt_path: str | None, verbose: bool, datamodule: DataModule | None
    ) -> list[dict[str, float]]:
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        kind = "val" if fn == "validate" else "test"
        return self._run(fn, model, datamodule, {kind: dataloaders}, ckpt_path, {"verbose": verbose})

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
        self.optimizers = self.strategy.setup_optimizers(optimizers)
        if isinstance(self.strategy, ReplacesTrainingModule):
            self.state.placed_module = self.strategy.training_module() or self.state.placed_module
        self.lr_scheduler_configs = configs
        from ember.loops.optimization import OptimizerHandle

        self._optimizer_handles = [OptimizerHandle(self, opt) for opt in self.optimizers]

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, filepath: str | os.PathLike[str], weights_only: bool | None = None, storage_options: Any = None) -> None:
        """Write a checkpoint of the current state to ``filepath`` (atomically);
        ``weights_only`` leaves out optimizer and loop state. ``storage_options``
        must be ``None`` (the checkpoint IO takes no options)."""
        if self.module is None:
            raise RuntimeError("save_checkpoint() needs a module: call it during or after fit/validate/test.")
        if storage_options is not None:
            raise TypeError(f"save_checkpoint(storage_options={storage_options!r}): ember's checkpoint IO takes no storage options; pass None.")
        checkpoint = checkpointing.dump(self, bool(weights_only))
        self.strategy.save_checkpoint(checkpoint, os.fspath(filepath))
        self.strategy.barrier("save_checkpoint")

    def _stateful_observers(self) -> list[Callback]:
        return [*self.callbacks, *self.loggers]

    def _loop_state(self) -> dict[str, Any]:
        return {
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            **position_state(self),
            "callback_metrics": {
                k: to_float(v)
                for k, v in self.callback_metrics.items()
                if isinstance(v, (int, float)) or getattr(v, "numel", lambda: 0)() == 1
            },
        }

    def _resolve_ckpt_path(self, ckpt_path: str | None, stage: str) -> str | None:
        if ckpt_path is None:
            return None
        if ckpt_path in ("best", "last"):
            # In memory after this trainer trained, else from the records on disk (a new process).
            return checkpointing.resolve_named_checkpoint(self, ckpt_path, stage)
        return os.fspath(ckpt_path)

    def _restore(self, checkpoint: dict[str, Any], path: str, full: bool) -> None:
        checkpointing.restore_module(self, checkpoint, path, strict=self.module.strict_loading)  # type: ignore[union-attr]
        self._ckpt_path = path
        if not full:
            return
        checkpointing.restore_training_state(self, checkpoint, path)
        loop = checkpoint.get("loops", {}).get("fit", {})
        self.global_step = int(loop.get("global_step", checkpoint.get("global_step", 0)))
        self.current_epoch = int(loop.get("epoch", checkpoint.get("epoch", 0)))
        self.state.position = position_from_state(loop, self.global_rank, self.world_size)
        self.state.callback_metrics.update({k: torch.tensor(v) for k, v in loop.get("callback_metrics", {}).items()})
        self._resuming = True

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
