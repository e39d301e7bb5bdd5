"""Fine-tuning callbacks: train a head first, then unfreeze a pretrained part.

``BaseFinetuning`` is the toolkit (freeze, make trainable, add an unfrozen
part's parameters to the live optimizer as a new parameter group) with two
methods to override: ``freeze_before_training(module)`` (runs in ``setup``,
before the optimizers exist) and ``finetune_function(module, epoch,
optimizer)`` (runs at the start of every training epoch, once per optimizer).

``BackboneFinetuning`` freezes ``module.backbone`` and, at epoch
``unfreeze_backbone_at_epoch``, adds it to the optimizer with learning rate
``backbone_initial_lr`` (default: the optimizer's current rate times
``backbone_initial_ratio_lr``); each later epoch multiplies the backbone's
rate by ``lambda_func(epoch + 1)``, capped at the optimizer's rate when
``should_align``.

Resume: the parameter groups added so far are saved by parameter name in the
callback's state, and rebuilt on the optimizers before their saved state is
loaded, so a resumed run continues with the same groups and learning rates.
Names and semantics follow Lightning's callbacks of the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ember.callback import Callback
from ember.plugin_manager import hookimpl

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

Modules = torch.nn.Module | Iterable[Any]


def multiplicative(epoch: int) -> float:
    """The default ``lambda_func`` of :class:`BackboneFinetuning`: double each epoch."""
    return 2.0


class BaseFinetuning(Callback):
    """Base class for callbacks that freeze parts of a module and unfreeze them
    during training. Subclasses implement :meth:`freeze_before_training` and
    :meth:`finetune_function`."""

    def __init__(self) -> None:
        # optimizer index -> its parameter groups, with parameter names instead of tensors
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = True
        self._internal_optimizer_metadata = state_dict.get("internal_optimizer_metadata", {})

    def on_load_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
        # ember loads the optimizers' saved state right after this hook: the
        # groups added before the checkpoint must exist by then.
        self._rebuild_param_groups(trainer, module)

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        self._rebuild_param_groups(trainer, module)

    def _rebuild_param_groups(self, trainer: Trainer, module: Module) -> None:
        if not self._restarting:
            return
        self._restarting = False
        if not self._internal_optimizer_metadata:
            return
        by_name = dict(module.named_parameters())
        for index, optimizer in enumerate(trainer.optimizers):
            groups = self._internal_optimizer_metadata.get(index)
            if groups is None:
                continue
            rebuilt = []
            for group in groups:
                missing = [name for name in group["params"] if name not in by_name]
                if missing:
                    raise KeyError(
                        f"{type(self).__name__}: the checkpoint's optimizer {index} holds parameters {missing[:5]} that "
                        f"{type(module).__name__} does not have. Resume with the module the checkpoint was written for."
                    )
                rebuilt.append({**group, "params": [by_name[name] for name in group["params"]]})
            optimizer.param_groups = rebuilt

    # ------------------------------------------------------------------ toolkit
    @staticmethod
    def flatten_modules(modules: Modules) -> list[torch.nn.Module]:
        """The leaf modules of ``modules`` (a module, a ``ModuleDict`` or an
        iterable of them), plus any parent that holds parameters itself."""
        if isinstance(modules, torch.nn.ModuleDict):
            modules = modules.values()
        if isinstance(modules, torch.nn.Module):
            candidates: Iterable[torch.nn.Module] = modules.modules()
        else:
            candidates = [m for item in modules for m in BaseFinetuning.flatten_modules(item)]
        return [m for m in candidates if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Iterator[torch.nn.Parameter]:
        """Parameters of ``modules`` whose ``requires_grad`` equals ``requires_grad``
        (batch-norm layers skipped unless ``train_bn``)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for param in module.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: torch.nn.Module) -> None:
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze ``modules``; batch-norm layers stay trainable when ``train_bn``."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
        """``params`` without those the optimizer already holds (which are skipped with a warning)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        kept, skipped = [], []
        for param in params:
            (skipped if id(param) in held else kept).append(param)
        if skipped:
            import warnings

            warnings.warn(
                f"{len(skipped)} parameter(s) to unfreeze are already in a group of {type(optimizer).__name__} and were skipped "
                "(batch-norm layers stay trainable, and in the optimizer, with train_bn=True). If others are among them, build the "
                "optimizer from the trainable parameters only: filter(lambda p: p.requires_grad, self.parameters()).",
                stacklevel=3,
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: Modules,
        optimizer: torch.optim.Optimizer,
        lr: float | None = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        """Make ``modules`` trainable and add their parameters to ``optimizer``
        as a new group, with learning rate ``lr`` (default: the first group's
        rate divided by ``initial_denom_lr``)."""
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        params = BaseFinetuning.filter_on_optimizer(optimizer, BaseFinetuning.filter_params(modules, train_bn, requires_grad=True))
        if params:
            optimizer.add_param_group({"params": params, "lr": group_lr})

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        self.freeze_before_training(module)

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        for index, optimizer in enumerate(trainer.optimizers):
            before = len(optimizer.param_groups)
            self.finetune_function(module, trainer.current_epoch, optimizer)
            self._record(module, index, before, optimizer.param_groups)

    def _record(self, module: Module, index: int, before: int, groups: list[dict[str, Any]]) -> None:
        names = {param: name for name, param in module.named_parameters()}

        def named(group: dict[str, Any]) -> dict[str, Any]:
            return {**{k: v for k, v in group.items() if k != "params"}, "params": [names[p] for p in group["params"]]}

        if index not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[index] = [named(g) for g in groups]
        elif len(groups) != before:
            self._internal_optimizer_metadata[index].extend(named(g) for g in groups[before:])

    def freeze_before_training(self, module: Module) -> None:
        """Freeze what must not train at first (called from ``setup``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement freeze_before_training(module).")

    def finetune_function(self, module: Module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Unfreeze / adjust learning rates at the start of ``epoch``."""
        raise NotImplementedError(f"{type(self).__name__} must implement finetune_function(module, epoch, optimizer).")


class BackboneFinetuning(BaseFinetuning):
    """Freeze ``module.backbone``, then unfreeze it at ``unfreeze_backbone_at_epoch``
    with a learning rate that grows by ``lambda_func`` each epoch (see the
    module docstring)."""

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict.get("previous_backbone_lr")
        super().load_state_dict(state_dict)

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if not isinstance(getattr(module, "backbone", None), torch.nn.Module):
            raise AttributeError(
                f"BackboneFinetuning needs {type(module).__name__}.backbone, an nn.Module holding the part to fine-tune; "
                "assign one in __init__ (self.backbone = ...) or subclass BaseFinetuning for another layout."
            )
        super().setup(trainer, module, stage)

    def freeze_before_training(self, module: Module) -> None:
        self.freeze(module.backbone)

    def finetune_function(self, module: Module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        current_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            lr = self.backbone_initial_lr if self.backbone_initial_lr is not None else current_lr * self.backbone_initial_ratio_lr
            self.previous_backbone_lr = lr
            self.unfreeze_and_add_param_group(
                module.backbone, optimizer, lr, initial_denom_lr=self.initial_denom_lr, train_bn=self.train_bn
            )
        elif epoch > self.unfreeze_backbone_at_epoch:
            lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and lr > current_lr:
                lr = current_lr
            optimizer.param_groups[-1]["lr"] = lr
            self.previous_backbone_lr = lr
        else:
            return
        if self.verbose:
            print(f"epoch {epoch}: lr {round(current_lr, self.rounding)}, backbone lr {round(lr, self.rounding)}")


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "backbone_finetuning", BackboneFinetuning)
