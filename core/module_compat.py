"""The rest of Lightning's ``LightningModule`` surface, kept out of
``module.py``: device and parallelism properties, the model-mode hooks of the
evaluation loops and the batch-transfer hooks.

Each hook here has a default that does what the loops would do anyway, and
the loops call a hook only when a module overrides it (see
:mod:`ember.loops.model_mode`), so a module that overrides none pays nothing.
"""

from __future__ import annotations

from typing import Any

import torch

from ember.tensors import apply_to_tensors


class BatchTransferHooks:
    """The batch-transfer hooks of :class:`ember.Module` and :class:`ember.DataModule`
    (a DataModule's override wins, as in Lightning). Called only when overridden."""

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch before it moves to the device (returns the batch)."""
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move ``batch`` to ``device``; override for custom batch types."""
        from ember.utilities import move_data_to_device

        return move_data_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch after it moved to the device (returns the batch)."""
        return batch


class ModuleCompatMixin(BatchTransferHooks):
    """Mixed into :class:`ember.Module`."""

    #: ``load_state_dict(..., strict=module.strict_loading)`` when a checkpoint
    #: is restored into this module (fit/validate/test/predict with ``ckpt_path``).
    strict_loading: bool = True

    @property
    def on_gpu(self) -> bool:
        """``True`` when the module's parameters are on a CUDA device."""
        return self.device.type == "cuda"  # type: ignore[attr-defined]

    @property
    def device_mesh(self) -> Any:
        """The strategy's device mesh when it has one (else ``None``); read it in ``configure_model``."""
        trainer = self._trainer  # type: ignore[attr-defined]
        return getattr(trainer.strategy, "device_mesh", None) if trainer is not None else None

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather ``data`` (a tensor, number or nested collection of them) from
        every process: each tensor gains a leading ``world_size`` dimension
        (none with one process). Call it on every process."""
        trainer = self._trainer  # type: ignore[attr-defined]
        if group is not None:
            raise ValueError("all_gather(group=...) is not supported: ember gathers over all processes.")

        def gather(x: torch.Tensor) -> torch.Tensor:
            if trainer is None or trainer.world_size == 1:
                return x
            if sync_grads:
                import torch.distributed.nn.functional as dist_fn

                return torch.stack(dist_fn.all_gather(x))
            return trainer.strategy.all_gather(x)

        def gather_number(x: Any) -> Any:
            return gather(torch.tensor(x, device=self.device)) if isinstance(x, (int, float, bool)) else x  # type: ignore[attr-defined]

        return apply_to_tensors(data, gather, gather_number)

    # ------------------------------------------------------------------ model construction
    def configure_model(self) -> None:
        """Build layers here to create them on the target device under the
        strategy (called at the start of every fit/validate/test/predict, before
        the module is placed); make it idempotent."""

    def configure_sharded_model(self) -> None:
        """Lightning's former name of :meth:`configure_model`; called right after it."""

    # ------------------------------------------------------------------ model mode around the loops
    def on_validation_model_zero_grad(self) -> None:
        """Called (when overridden) before validation inside ``fit``."""
        self.zero_grad()  # type: ignore[attr-defined]

    def on_validation_model_eval(self) -> None:
        """Put the model in eval mode when validation starts (override to change)."""
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_validation_model_train(self) -> None:
        """Put the model back in train mode after validation inside ``fit``."""
        self.trainer.model.train()  # type: ignore[attr-defined]

    def on_test_model_eval(self) -> None:
        """Put the model in eval mode when testing starts."""
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_test_model_train(self) -> None:
        """Put the model back in train mode after testing, if it was training."""
        self.trainer.model.train()  # type: ignore[attr-defined]

    def on_predict_model_eval(self) -> None:
        """Put the model in eval mode when prediction starts."""
        self.trainer.model.eval()  # type: ignore[attr-defined]
