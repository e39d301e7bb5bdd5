"""``Module``: where the user's model and its training logic live.

Method names and signatures follow Lightning's ``LightningModule``, so a
module ports by changing its imports.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ember.hparams import HyperparametersMixin
from ember.metric_logging import collection_items
from ember.module_compat import ModuleCompatMixin
from ember.module_optim import ModuleOptimizationMixin

if TYPE_CHECKING:
    from ember.results import Results
    from ember.trainer import Trainer


class Module(ModuleOptimizationMixin, HyperparametersMixin, ModuleCompatMixin, torch.nn.Module):
    """Base class for models trained by :class:`ember.Trainer`."""

    #: Set to ``False`` to step optimizers yourself in ``training_step``
    #: (``self.optimizers()``, ``self.manual_backward(loss)``, ``opt.step()``).
    automatic_optimization: bool = True
    #: An example input; ``ModelSummary`` and exporters use it when present.
    example_input_array: Any = None

    _trainer: Trainer | None = None
    _results: Results | None = None
    _device: torch.device | None = None
    _warned_no_trainer: bool = False

    # ------------------------------------------------------------------ trainer link
    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to an ember.Trainer; call trainer.fit(module) first.")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        object.__setattr__(self, "_trainer", trainer)

    @property
    def device(self) -> torch.device:
        if self._device is not None:
            return self._device
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Any]:
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.strategy.local_rank if self._trainer is not None else 0

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the global-zero process only."""
        if self._trainer is None or self._trainer.is_global_zero:
            print(*args, **kwargs)

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a metric.

        Values stay tensors (no ``.item()``, no device sync) until a logger or
        the progress bar reads them. Defaults follow where you log from: in
        ``training_step`` and the train batch hooks ``on_step=True,
        on_epoch=False``; everywhere else ``on_step=False, on_epoch=True``.
        With both, the metric is recorded as ``name_step`` and ``name_epoch``.
        ``reduce_fx`` (``"mean"``, ``"sum"``, ``"max"``, ``"min"``) combines the
        epoch's values; means are weighted by ``batch_size`` (inferred from the
        batch when not given). ``sync_dist`` reduces across processes when the
        epoch value is computed.

        ``value`` may be a torchmetrics ``Metric``: the step value is what the
        metric's last ``forward`` (``metric(preds, target)``) returned, the
        epoch value is ``metric.compute()`` (which synchronises processes
        itself), and the metric is ``reset()`` when the epoch's values are
        reduced. A ``MetricCollection`` logs each of its metrics.
        """
        results = self._results
        if results is None:
            if not self._warned_no_trainer:
                object.__setattr__(self, "_warned_no_trainer", True)
                warnings.warn(f"self.log({name!r}) was called outside a trainer run; the value is ignored.", stacklevel=2)
            return
        results.log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist, add_dataloader_idx, batch_size)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """``self.log`` for every item of ``dictionary``, with the same options.
        A torchmetrics ``MetricCollection`` logs each of its metrics under its
        (prefixed) name."""
        items = collection_items(dictionary)
        pairs = items if items is not None else dictionary.items()
        results = self._results
        if results is not None and type(self).log is Module.log:
            # What self.log would do for each item, without a call through it per item.
            log = results.log
            for name, value in pairs:
                log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist, add_dataloader_idx, batch_size)
            return
        for name, value in pairs:
            self.log(
                name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph,
                sync_dist, sync_dist_group, add_dataloader_idx, batch_size, None, rank_zero_only,
            )  # fmt: skip

    # ------------------------------------------------------------------ the user's steps
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        """Compute and return the loss: a tensor, a dict with ``"loss"``, or
        ``None`` to skip this batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step(batch, batch_idx) to be fitted.")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        """Evaluate one validation batch; log metrics with ``self.log``."""

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        """Evaluate one test batch; log metrics with ``self.log``."""

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Return the prediction for one batch. Calls ``self(batch)`` by default,
        with the whole batch, as Lightning does: override it when batches are
        ``(inputs, targets)`` pairs."""
        return self(batch)

    def configure_optimizers(self) -> Any:
        """Return an optimizer; a list of them; ``(optimizers, schedulers)``; or
        a dict with ``"optimizer"`` and optionally ``"lr_scheduler"`` (a
        scheduler, or a dict with ``scheduler``, ``interval`` ("step"/"epoch"),
        ``frequency``, ``monitor``, ``name``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement configure_optimizers() to be fitted.")

    def configure_callbacks(self) -> Any:
        """Callbacks this module needs; they replace user callbacks of the same type."""
        return []

    def train_dataloader(self) -> Any:
        raise NotImplementedError

    def val_dataloader(self) -> Any:
        raise NotImplementedError

    def test_dataloader(self) -> Any:
        raise NotImplementedError

    def predict_dataloader(self) -> Any:
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Download or write data; runs on one process per node."""

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str,
        map_location: Any = None,
        hparams_file: str | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Module:
        """Rebuild the module from a checkpoint: its saved hyperparameters
        (updated from ``hparams_file``, a YAML file, then overridden by
        ``kwargs``) go to ``__init__``, then the weights load (``strict``
        defaults to the module's ``strict_loading``). ``weights_only=False``
        lets the file hold arbitrary pickled objects (only for files you trust)."""
        from ember.checkpointing import load_checkpoint_file, load_weights, read_hparams_file

        checkpoint = load_checkpoint_file(checkpoint_path, map_location, weights_only=weights_only)
        init_args = {**checkpoint.get("hyper_parameters", {}), **read_hparams_file(hparams_file), **kwargs}
        module = cls(**init_args)
        module.on_load_checkpoint(checkpoint)
        load_weights(module, checkpoint, str(checkpoint_path), module.strict_loading if strict is None else strict)
        return module

    # ------------------------------------------------------------------ export (see ember.export)
    def to_onnx(self, file_path: Any = None, input_sample: Any = None, **kwargs: Any) -> Any:
        """Export ``forward`` to an ONNX file (``file_path=None``: return the
        ``ONNXProgram`` without writing); ``input_sample`` defaults to
        ``example_input_array``. See :func:`ember.export.to_onnx`."""
        from ember.export import to_onnx

        return to_onnx(self, file_path, input_sample, **kwargs)

    def to_torch_export(self, input_sample: Any = None, file_path: Any = None, **kwargs: Any) -> Any:
        """``torch.export`` ``forward`` (and save it to ``file_path`` when given);
        returns the ``ExportedProgram``. See :func:`ember.export.to_torch_export`."""
        from ember.export import to_torch_export

        return to_torch_export(self, input_sample, file_path, **kwargs)

    def to_torchscript(self, file_path: Any = None, method: str | None = "script", example_inputs: Any = None, **kwargs: Any) -> Any:
        """TorchScript of this module (``method="script"`` or ``"trace"`` on
        ``example_inputs``, default ``example_input_array``), saved to
        ``file_path`` when given. See :func:`ember.torchscript.to_torchscript`."""
        from ember.torchscript import to_torchscript

        return to_torchscript(self, file_path, method, example_inputs, **kwargs)

    # ------------------------------------------------------------------ hooks (no-ops; see ember.hookspecs)
    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None: ...
    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None: ...
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
