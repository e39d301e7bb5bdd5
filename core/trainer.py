"""The ``Trainer``: resolves the stack once, then runs the loops.

Here: the arguments, the roles and observers resolved from them, and the four
entry points. The rest of the class lives beside it, one mixin per concern:
:mod:`ember.trainer_properties` (the public read-only properties),
:mod:`ember.trainer_run` (running a stage: set-up, loop, teardown),
:mod:`ember.trainer_checkpoint` (saving and restoring),
:mod:`ember.trainer_compat` (the rest of Lightning's surface) and
:class:`ember.loops.state.RunStateView` (the run's counters).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import torch

from ember import resolve, trainer_args
from ember.callback import Callback, Logger
from ember.datamodule import DataModule
from ember.loops.state import RunState, RunStateView
from ember.module import Module
from ember.optim import LRSchedulerConfig
from ember.plugin_manager import AutoloadSettings, PluginSource, default_plugin_manager
from ember.results import to_float
from ember.roles import DistributesSamplers, RoleRegistry
from ember.trainer_checkpoint import TrainerCheckpointMixin
from ember.trainer_compat import TrainerCompatMixin, barebones_arguments, default_logger_name
from ember.trainer_properties import TrainerProperties
from ember.trainer_run import TrainerRunMixin

_DEFAULT_SLOTS = (
    ("progress_bar", "enable_progress_bar"),
    ("model_summary", "enable_model_summary"),
    ("model_checkpoint", "enable_checkpointing"),
    ("fault_tolerance", "enable_fault_tolerance"),
)


#: Lightning's name for what ``trainer.state`` holds: here, the whole run's state.
TrainerState = RunState


class Trainer(TrainerProperties, TrainerCheckpointMixin, TrainerRunMixin, RunStateView, TrainerCompatMixin):
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
