"""Weight averaging: ``WeightAveraging`` (any ``torch.optim.swa_utils.AveragedModel``
averaging), ``EMAWeightAveraging`` (an exponential moving average) and
``StochasticWeightAveraging`` (SWA with its learning-rate schedule).

The average lives beside the module. Validation runs on the averaged weights
(swapped in for the validation epoch and back out after); when training ends
the module keeps the average. A checkpoint's ``state_dict`` holds the average
and ``current_model_state`` the weights being trained, so
``load_from_checkpoint`` gives the averaged model and resuming ``fit`` goes on
from the trained weights with the average restored.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_avg_fn

from ember.callback import Callback

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


def _tensors(module: torch.nn.Module, buffers: bool) -> Any:
    return itertools.chain(module.parameters(), module.buffers()) if buffers else module.parameters()


class WeightAveraging(Callback):
    """Keep an :class:`~torch.optim.swa_utils.AveragedModel` of the module,
    updated when :meth:`should_update` says so (by default after every
    optimizer step). ``kwargs`` go to ``AveragedModel`` (``avg_fn``, ``multi_avg_fn``).

    :param device: where the average is kept (default: the module's device).
    :param use_buffers: average buffers (batch-norm statistics) too.
    """

    def __init__(self, device: torch.device | str | int | None = None, use_buffers: bool = True, **kwargs: Any) -> None:
        self._device = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: AveragedModel | None = None
        self._latest_update_step = 0
        self._latest_update_epoch = -1
        self._pending_state: dict[str, Any] | None = None

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Whether to fold the current weights into the average after
        optimizer step ``step_idx`` (0-based) or at the end of epoch ``epoch_idx``."""
        return step_idx is not None

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage != "fit":
            return
        # AveragedModel deep-copies the module: without its link to the trainer (and the run's logging state).
        links = {name: module.__dict__.get(name) for name in ("_trainer", "_results")}
        for name in links:
            object.__setattr__(module, name, None)
        try:
            self._average_model = AveragedModel(module, device=self._device or module.device, use_buffers=self._use_buffers, **self._kwargs)
        finally:
            for name, value in links.items():
                object.__setattr__(module, name, value)
        if self._pending_state is not None:
            self._average_model.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self._average_model.update_parameters(module)  # type: ignore[union-attr]
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if trainer.current_epoch > self._latest_update_epoch and self.should_update(epoch_idx=trainer.current_epoch):
            self._average_model.update_parameters(module)  # type: ignore[union-attr]
            self._latest_update_epoch = trainer.current_epoch

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        if self._average_model is not None:
            for avg, cur in zip(_tensors(self._average_model.module, self._use_buffers), _tensors(module, self._use_buffers), strict=True):
                cur.data.copy_(avg.data)

    def _swap(self, module: Module) -> None:
        if self._average_model is None:
            return
        for avg, cur in zip(_tensors(self._average_model.module, self._use_buffers), _tensors(module, self._use_buffers), strict=True):
            kept = avg.data.clone()
            avg.data.copy_(cur.data)
            cur.data.copy_(kept)

    def on_validation_epoch_start(self, trainer: Trainer, module: Module) -> None:
        self._swap(module)

    def on_validation_epoch_end(self, trainer: Trainer, module: Module) -> None:
        self._swap(module)

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step, "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = int(state_dict.get("latest_update_step", 0))
        self._latest_update_epoch = int(state_dict.get("latest_update_epoch", -1))

    def on_save_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None or trainer.state.fn != "fit":
            return
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")}
        checkpoint["averaging_state"] = {k: v for k, v in state.items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
        if "current_model_state" not in checkpoint:
            return
        average = {f"module.{k}": v for k, v in checkpoint["state_dict"].items()}
        self._pending_state = {**average, **checkpoint.get("averaging_state", {})}
        checkpoint["state_dict"] = checkpoint["current_model_state"]  # training resumes from the trained weights
        if self._average_model is not None:
            self._average_model.load_state_dict(self._pending_state)
            self._pending_state = None


class EMAWeightAveraging(WeightAveraging):
    """An exponential moving average of the weights: ``avg = decay * avg + (1 - decay) * w``,
    every ``update_every_n_steps`` optimizer steps from ``update_starting_at_step``
    (and at the end of every epoch from ``update_starting_at_epoch``, when given)."""

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMAWeightAveraging(decay={decay}) must be in [0, 1].")
        super().__init__(device=device, use_buffers=use_buffers, avg_fn=get_ema_avg_fn(decay=decay), **kwargs)
        self.decay = decay
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            if started and self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0:
                return True
        return epoch_idx is not None and self.update_starting_at_epoch is not None and epoch_idx >= self.update_starting_at_epoch


class StochasticWeightAveraging(WeightAveraging):
    """Stochastic Weight Averaging: from epoch ``swa_epoch_start`` (an int, or
    a fraction of ``max_epochs``) the learning rate anneals to ``swa_lrs``
    over ``annealing_epochs`` and the weights are averaged at the end of every
    epoch; when training ends the module takes the average and its batch-norm
    statistics are recomputed with one pass over the training data.

    :param avg_fn: ``(averaged, current, num_averaged) -> averaged``; default the running mean.
    """

    def __init__(
        self,
        swa_lrs: float | list[float],
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: str = "cos",
        avg_fn: Any = None,
        device: torch.device | str | None = torch.device("cpu"),  # noqa: B008 - an immutable default
    ) -> None:
        lrs = swa_lrs if isinstance(swa_lrs, list) else [swa_lrs]
        if not all(isinstance(lr, (int, float)) and lr > 0 for lr in lrs):
            raise ValueError(f"StochasticWeightAveraging(swa_lrs={swa_lrs!r}) must be a positive float or a list of them.")
        if isinstance(swa_epoch_start, int) and swa_epoch_start < 0 or isinstance(swa_epoch_start, float) and not 0 <= swa_epoch_start <= 1:
            raise ValueError(f"StochasticWeightAveraging(swa_epoch_start={swa_epoch_start!r}): an epoch >= 0 or a fraction in [0, 1].")
        if annealing_strategy not in ("cos", "linear"):
            raise ValueError(f"StochasticWeightAveraging(annealing_strategy={annealing_strategy!r}) must be 'cos' or 'linear'.")
        super().__init__(device=device, use_buffers=False, **({"avg_fn": avg_fn} if avg_fn is not None else {}))
        self.swa_lrs = swa_lrs
        self.swa_epoch_start = swa_epoch_start
        self.annealing_epochs = annealing_epochs
        self.annealing_strategy = annealing_strategy
        self._start_epoch = 0
        self._swa_scheduler: SWALR | None = None

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return epoch_idx is not None and epoch_idx >= self._start_epoch

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        start = self.swa_epoch_start
        self._start_epoch = int(start * max(trainer.max_epochs, 1)) if isinstance(start, float) else int(start)

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if trainer.current_epoch != self._start_epoch or self._swa_scheduler is not None:
            return
        optimizer = trainer.optimizers[0]
        lrs = self.swa_lrs if isinstance(self.swa_lrs, list) else [self.swa_lrs] * len(optimizer.param_groups)
        if len(lrs) != len(optimizer.param_groups):
            raise ValueError(f"StochasticWeightAveraging: {len(lrs)} swa_lrs for {len(optimizer.param_groups)} parameter groups.")
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(
            optimizer, swa_lr=lrs, anneal_epochs=self.annealing_epochs, anneal_strategy=self.annealing_strategy  # type: ignore[arg-type]
        )
        # From here the SWA schedule drives the learning rate, epoch by epoch.
        from ember.optim import LRSchedulerConfig

        trainer.lr_scheduler_configs = [LRSchedulerConfig(scheduler=self._swa_scheduler, interval="epoch")]

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        if self._average_model is None or self._average_model.n_averaged.item() == 0:
            return
        super().on_train_end(trainer, module)
        loader = trainer.train_dataloader
        if loader is not None and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            from torch.optim.swa_utils import update_bn

            batches = (b[0] if isinstance(b, (list, tuple)) else b for b in loader)
            update_bn(batches, module, device=module.device)
