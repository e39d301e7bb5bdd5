"""``Callback``: the object-oriented way to implement ember hooks.

Override any method whose name is a hook in :mod:`ember.hookspecs`; the
arguments are the hook's, in order. Only the methods a subclass overrides are
registered, so an unused hook costs nothing per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ember.module import Module
    from ember.trainer import Trainer


class Callback:
    """Base class for callbacks. Method names and arguments follow Lightning's,
    so a Lightning callback ports by changing its imports."""

    #: The default slot this callback fills (``"progress_bar"``,
    #: ``"model_summary"`` or ``"model_checkpoint"``): when the user passes
    #: one, the trainer adds no built-in default for that slot.
    fills: str | None = None

    @property
    def state_key(self) -> str:
        """Key under which this callback's ``state_dict`` is stored in a
        checkpoint. Override when two instances of one class may coexist."""
        return type(self).__qualname__

    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"{type(self).__qualname__}{repr(kwargs)}"

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints under :attr:`state_key`."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # The hooks. Each is a no-op here; see ember.hookspecs for when they fire.
    def setup(self, trainer: Trainer, module: Module, stage: str) -> None: ...
    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None: ...
    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None: ...
    def on_fit_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_fit_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_sanity_check_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_sanity_check_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_train_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_train_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None: ...
    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_before_backward(self, trainer: Trainer, module: Module, loss: torch.Tensor) -> None: ...
    def on_after_backward(self, trainer: Trainer, module: Module) -> None: ...
    def on_before_optimizer_step(self, trainer: Trainer, module: Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_before_zero_grad(self, trainer: Trainer, module: Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_validation_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_validation_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_validation_epoch_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_validation_epoch_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_validation_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_test_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_test_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_test_epoch_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_test_epoch_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_test_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_predict_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_predict_epoch_start(self, trainer: Trainer, module: Module) -> None: ...
    def on_predict_epoch_end(self, trainer: Trainer, module: Module) -> None: ...
    def on_predict_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_save_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None: ...
    def on_log_metrics(self, trainer: Trainer, metrics: dict[str, float], step: int) -> None: ...
    def on_log_hyperparams(self, trainer: Trainer, params: dict[str, Any]) -> None: ...


class Logger(Callback):
    """Base class for experiment loggers.

    A logger is a callback that receives ``on_log_metrics`` and
    ``on_log_hyperparams``; subclasses implement :meth:`log_metrics` and
    :meth:`log_hyperparams` (Lightning's names) and, where it applies,
    :attr:`log_dir`. The trainer calls loggers on the global-zero process only.
    """

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def version(self) -> int | str | None:
        return None

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def log_dir(self) -> str | None:
        """Directory this run writes to (checkpoints go beneath it by default)."""
        return None

    @property
    def experiment(self) -> Any:
        """The underlying vendor object, for direct use."""
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Record hyperparameters; ignoring them is allowed."""

    def save(self) -> None:
        """Flush buffered records to storage."""

    def finalize(self, status: str) -> None:
        """Called when the run ends; ``status`` is ``"success"``, ``"failed"`` or
        ``"interrupted"``."""
        self.save()

    #: Prepended to every metric name, joined with ``-`` (Lightning's ``prefix`` argument).
    prefix: str = ""

    def on_log_metrics(self, trainer: Trainer, metrics: dict[str, float], step: int) -> None:
        if self.prefix:
            metrics = {f"{self.prefix}-{k}": v for k, v in metrics.items()}
        self.log_metrics(metrics, step)

    def on_log_hyperparams(self, trainer: Trainer, params: dict[str, Any]) -> None:
        self.log_hyperparams(params)
