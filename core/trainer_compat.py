"""The rest of Lightning's ``Trainer`` surface, kept out of ``trainer.py``:
read-only views of the run (``trainer.model``, ``device_ids``, the
dataloaders, ...), ``init_module`` and ``print``, and the set-up work of the
arguments ``sync_batchnorm``, ``use_distributed_sampler``, ``barebones`` and
``reload_dataloaders_every_n_epochs`` (see :func:`apply_at_setup`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from ember.roles import StopsTraining

if TYPE_CHECKING:
    from ember.callback import Callback


class TrainerCompatMixin:
    """Mixed into :class:`ember.Trainer`; reads only what the trainer holds."""

    #: ``True`` while the batch being trained on is the epoch's last (set by the fit loop).
    is_last_batch: bool = False

    @property
    def model(self) -> torch.nn.Module | None:
        """The module as the strategy placed it (e.g. wrapped in
        ``DistributedDataParallel``); the user's module before a run."""
        placed = self.state.placed_module
        return placed if placed is not None else self.module  # type: ignore[attr-defined]

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint the current (or last) run restored, if any."""
        return self._ckpt_path  # type: ignore[attr-defined]

    @property
    def precision_plugin(self) -> Any:
        return self.strategy.precision  # type: ignore[attr-defined]

    @property
    def scaler(self) -> Any:
        """The precision's gradient scaler (``16-mixed``), else ``None``."""
        return getattr(self.strategy.precision, "scaler", None)  # type: ignore[attr-defined]

    @property
    def node_rank(self) -> int:
        return int(getattr(self.strategy, "node_rank", 0))  # type: ignore[attr-defined]

    @property
    def device_ids(self) -> list[int]:
        """Indices of the devices this trainer's processes use (this node)."""
        devices = getattr(self.strategy, "parallel_devices", None) or [self.strategy.root_device]  # type: ignore[attr-defined]
        return [d.index or 0 if isinstance(d, torch.device) else int(d) for d in devices]

    @property
    def num_devices(self) -> int:
        return len(self.device_ids)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """``num_replicas`` and ``rank`` for a ``DistributedSampler`` under a
        multi-process strategy; ``None`` otherwise."""
        from ember.strategies import ParallelStrategy

        if not isinstance(self.strategy, ParallelStrategy):  # type: ignore[attr-defined]
            return None
        return {"num_replicas": self.world_size, "rank": self.global_rank}  # type: ignore[attr-defined]

    @property
    def early_stopping_callbacks(self) -> list[Callback]:
        return [cb for cb in self.callbacks if isinstance(cb, StopsTraining)]  # type: ignore[attr-defined]

    @property
    def enable_validation(self) -> bool:
        """Whether ``fit`` validates: the module has a ``validation_step`` and
        ``limit_val_batches`` is not 0."""
        from ember.module import Module

        module = self.module  # type: ignore[attr-defined]
        has_step = module is not None and type(module).validation_step is not Module.validation_step
        return has_step and self.limit_val_batches != 0  # type: ignore[attr-defined]

    @property
    def evaluating(self) -> bool:
        return self.state.stage in ("validate", "test", "sanity_check")  # type: ignore[attr-defined]

    @property
    def received_sigterm(self) -> bool:
        """Whether a preemption signal (SIGTERM, ...) arrived during this run."""
        return any(getattr(cb, "received", None) is not None for cb in self.callbacks)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ dataloaders of the run
    @property
    def explicit_dataloaders(self) -> Mapping[str, Any]:
        """The dataloaders passed to the running (or last) ``fit``/``validate``/
        ``test``/``predict`` call, by kind (``"train"``, ``"val"``, ``"test"``,
        ``"predict"``), as given (before the strategy adapts them); read-only.
        A kind that is absent or ``None`` comes from the DataModule or Module."""
        return MappingProxyType(self.state.explicit_loaders or {})

    @property
    def train_dataloader(self) -> Any:
        return self.state.train_loader

    @property
    def val_dataloaders(self) -> Any:
        loaders = self.state.val_loaders if self.state.fn == "fit" else self._eval_loaders_of("validate")  # type: ignore[attr-defined]
        return _one_or_list(loaders)

    @property
    def test_dataloaders(self) -> Any:
        return _one_or_list(self._eval_loaders_of("test"))

    @property
    def predict_dataloaders(self) -> Any:
        return _one_or_list(self.state.predict_loaders)

    def _eval_loaders_of(self, fn: str) -> list[Any] | None:
        return self.state.eval_loaders if self.state.fn == fn else None  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ helpers
    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the global-zero process only."""
        if self.is_global_zero:  # type: ignore[attr-defined]
            print(*args, **kwargs)

    @contextlib.contextmanager
    def init_module(self, empty_init: bool | None = None) -> Iterator[None]:
        """Create the module's tensors directly on the strategy's device, in the
        precision's parameter dtype (``bf16-true``, ``16-true``, ``64-true``).
        ``empty_init`` is accepted for Lightning compatibility; weights are
        always initialised."""
        precision = self.strategy.precision  # type: ignore[attr-defined]
        dtype = getattr(precision, "dtype", None)
        true_precision = dtype is not None and str(getattr(precision, "name", "")).endswith("-true")
        previous = torch.get_default_dtype()
        with torch.device(self.strategy.root_device):  # type: ignore[attr-defined]
            if true_precision and dtype.is_floating_point:
                torch.set_default_dtype(dtype)
            try:
                yield
            finally:
                torch.set_default_dtype(previous)


def _one_or_list(loaders: list[Any] | None) -> Any:
    if not loaders:
        return None
    return loaders[0] if len(loaders) == 1 else list(loaders)


# --------------------------------------------------------------------------- arguments with set-up work
_BAREBONES_OFF = (
    ("enable_checkpointing", "checkpointing"),
    ("logger", "logging"),
    ("enable_progress_bar", "the progress bar"),
    ("enable_model_summary", "the model summary"),
    ("num_sanity_val_steps", "the sanity check"),
)


def barebones_arguments(values: dict[str, Any]) -> tuple[Any, ...]:
    """``Trainer(barebones=True)``: everything that costs time besides the
    training itself is off. Returns the new values of the arguments in
    :data:`_BAREBONES_OFF`; asking for one of them (or for ``fast_dev_run``,
    ``detect_anomaly``, a ``profiler``) at the same time is an error."""
    conflicts = [name for name, _ in _BAREBONES_OFF if values.get(name) not in (None, False, 0)]
    conflicts += [name for name in ("fast_dev_run", "detect_anomaly", "profiler") if values.get(name) not in (None, False, 0)]
    if conflicts:
        name = conflicts[0]
        raise ValueError(
            f"Trainer(barebones=True, {name}={values[name]!r}): barebones mode turns {name} off to measure raw speed; "
            f"drop {name}= or barebones=True."
        )
    return (False, False, False, False, 0)


def default_logger_name(registry: Any) -> str:
    """The logger of ``Trainer(logger=None)``, as in Lightning: TensorBoard
    when the ``tensorboard`` package is installed (and its plugin enabled),
    else CSV."""
    import importlib.util

    names = registry.names("logger")
    if "tensorboard" in names and importlib.util.find_spec("tensorboard") is not None:
        return "tensorboard"
    return "csv"


def setup_compat(trainer: Any, module: Any) -> None:
    """Set-up work of every run, before the strategy places the module:
    ``rank_zero_only.rank``, the ``configure_model`` hooks and ``sync_batchnorm``."""
    from ember.data import _overrides
    from ember.module import Module
    from ember.utilities import rank_zero_only

    rank_zero_only.rank = trainer.global_rank  # type: ignore[attr-defined]
    trainer._dataloaders_loaded_epoch = 0
    for hook in ("configure_model", "configure_sharded_model"):
        if _overrides(module, Module, hook):
            getattr(module, hook)()
    if trainer.sync_batchnorm:
        from ember.strategies import ParallelStrategy

        if isinstance(trainer.strategy, ParallelStrategy):
            convert_sync_batchnorm(module)


def convert_sync_batchnorm(module: torch.nn.Module) -> None:
    """Replace every ``BatchNorm*d`` inside ``module`` by ``SyncBatchNorm`` (in
    place, keeping statistics and weights), so that batch statistics are
    computed over the global batch of all processes."""
    for name, child in list(module.named_children()):
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)


def reload_dataloaders_if_due(trainer: Any) -> None:
    """``reload_dataloaders_every_n_epochs=n``: ask the DataModule / module for
    fresh train and val dataloaders at the start of every n-th epoch."""
    n = trainer.reload_dataloaders_every_n_epochs
    epoch = trainer.current_epoch
    last = getattr(trainer, "_dataloaders_loaded_epoch", 0)
    if not n or epoch - last < n:
        return
    from ember import data

    data.collect(trainer, "fit")
    trainer._dataloaders_loaded_epoch = epoch
