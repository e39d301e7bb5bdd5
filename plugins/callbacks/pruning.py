"""``ModelPruning``: prune weights with ``torch.nn.utils.prune`` at the end of
training epochs (or at its start with ``prune_on_train_epoch_end=False``,
at the end of validation)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.utils import prune

from ember.callback import Callback

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

_FUNCTIONS = {
    "l1_unstructured": prune.l1_unstructured,
    "random_unstructured": prune.random_unstructured,
    "ln_structured": prune.ln_structured,
    "random_structured": prune.random_structured,
}
_GLOBAL = {"l1_unstructured": prune.L1Unstructured, "random_unstructured": prune.RandomUnstructured}


class ModelPruning(Callback):
    """Prune parameters as training goes.

    :param pruning_fn: ``"l1_unstructured"``, ``"random_unstructured"``,
        ``"ln_structured"``, ``"random_structured"``, or a function
        ``fn(module, name, amount)`` as in ``torch.nn.utils.prune``.
    :param parameters_to_prune: ``(module, parameter name)`` pairs; default:
        ``parameter_names`` of every Linear/Conv/BatchNorm-like layer.
    :param parameter_names: default ``["weight", "bias"]``.
    :param use_global_unstructured: prune the lowest-magnitude weights across
        all given parameters together (unstructured methods only).
    :param amount: fraction (float) or count (int) to prune, or ``fn(epoch)``.
    :param apply_pruning: ``bool`` or ``fn(epoch) -> bool``.
    :param make_pruning_permanent: remove the masks when training ends.
    :param use_lottery_ticket_hypothesis: after each pruning, reset the
        surviving weights to their values before training (``bool`` or ``fn(epoch)``).
    :param resample_parameters: with the lottery ticket, draw new initial
        values instead of reusing the original ones.
    :param pruning_dim: ``dim`` of structured pruning; ``pruning_norm``: its ``n``.
    :param verbose: 1 prints the sparsity after each pruning, 2 per parameter.
    """

    def __init__(
        self,
        pruning_fn: Callable[..., Any] | str,
        parameters_to_prune: Sequence[tuple[torch.nn.Module, str]] = (),
        parameter_names: list[str] | None = None,
        use_global_unstructured: bool = True,
        amount: int | float | Callable[[int], int | float] = 0.5,
        apply_pruning: bool | Callable[[int], bool] = True,
        make_pruning_permanent: bool = True,
        use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = True,
        resample_parameters: bool = False,
        pruning_dim: int | None = None,
        pruning_norm: int | None = None,
        verbose: int = 0,
        prune_on_train_epoch_end: bool = True,
    ) -> None:
        if isinstance(pruning_fn, str):
            if pruning_fn not in _FUNCTIONS:
                raise ValueError(f"ModelPruning(pruning_fn={pruning_fn!r}): use one of {sorted(_FUNCTIONS)} or a function.")
            if "structured" in pruning_fn and "unstructured" not in pruning_fn:
                if pruning_dim is None or (pruning_fn == "ln_structured" and pruning_norm is None):
                    raise ValueError(f"ModelPruning(pruning_fn={pruning_fn!r}) needs pruning_dim (and pruning_norm for ln_structured).")
                use_global_unstructured = False
        elif use_global_unstructured:
            raise ValueError("ModelPruning(use_global_unstructured=True) needs a pruning_fn name ('l1_unstructured' or 'random_unstructured').")
        if verbose not in (0, 1, 2):
            raise ValueError(f"ModelPruning(verbose={verbose}) must be 0, 1 or 2.")
        self.pruning_fn = pruning_fn
        self._parameters_to_prune = list(parameters_to_prune)
        self._parameter_names = parameter_names or ["weight", "bias"]
        self._use_global_unstructured = use_global_unstructured
        self.amount = amount
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = resample_parameters
        self._pruning_dim, self._pruning_norm = pruning_dim, pruning_norm
        self._verbose = verbose
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._original: list[torch.Tensor] = []

    @staticmethod
    def _at(value: Any, epoch: int) -> Any:
        return value(epoch) if callable(value) else value

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage != "fit":
            return
        if not self._parameters_to_prune:
            self._parameters_to_prune = [
                (m, name)
                for m in module.modules()
                if not list(m.children())
                for name in self._parameter_names
                if isinstance(getattr(m, name, None), torch.nn.Parameter)
            ]
        self._original = [getattr(m, name).detach().clone() for m, name in self._parameters_to_prune]

    def _prune(self, amount: Any) -> None:
        if self._use_global_unstructured:
            prune.global_unstructured(self._parameters_to_prune, pruning_method=_GLOBAL[self.pruning_fn], amount=amount)  # type: ignore[index]
            return
        fn = _FUNCTIONS.get(self.pruning_fn, self.pruning_fn) if isinstance(self.pruning_fn, str) else self.pruning_fn
        extra: dict[str, Any] = {}
        if self._pruning_dim is not None:
            extra["dim"] = self._pruning_dim
        if self.pruning_fn == "ln_structured":
            extra["n"] = self._pruning_norm
        for m, name in self._parameters_to_prune:
            fn(m, name, amount=amount, **extra)  # type: ignore[operator]

    def _reset_survivors(self) -> None:
        for (m, name), original in zip(self._parameters_to_prune, self._original, strict=True):
            orig = getattr(m, name + "_orig", None)
            if orig is None:
                continue
            source = original
            if self._resample_parameters:
                source = copy.deepcopy(m).reset_parameters() or getattr(m, name + "_orig", original)
            orig.data.copy_(source.data if isinstance(source, torch.Tensor) else original)

    def _maybe_prune(self, trainer: Trainer) -> None:
        epoch = trainer.current_epoch
        amount = self._at(self.amount, epoch)
        if not self._at(self._apply_pruning, epoch) or not amount:
            return
        self._prune(amount)
        if self._at(self._use_lottery_ticket_hypothesis, epoch):
            self._reset_survivors()
        if self._verbose and trainer.is_global_zero:
            for line in self.sparsity_report(per_parameter=self._verbose == 2):
                print(line, flush=True)

    def sparsity_report(self, per_parameter: bool = False) -> list[str]:
        """Lines saying how many weights are zero (overall, or per parameter)."""
        counts = [(f"{type(m).__name__}.{name}", int((getattr(m, name) == 0).sum()), getattr(m, name).numel()) for m, name in self._parameters_to_prune]
        zeros, total = sum(c[1] for c in counts), sum(c[2] for c in counts)
        lines = [f"ModelPruning: {zeros}/{total} weights pruned ({100 * zeros / max(total, 1):.2f}%)"]
        if per_parameter:
            lines += [f"  {n}: {z}/{t} ({100 * z / max(t, 1):.2f}%)" for n, z, t in counts]
        return lines

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if self._prune_on_train_epoch_end:
            self._maybe_prune(trainer)

    def on_validation_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if not self._prune_on_train_epoch_end and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._maybe_prune(trainer)

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        if self._make_pruning_permanent:
            self.make_pruning_permanent(module)

    def make_pruning_permanent(self, module: torch.nn.Module) -> None:
        """Fold the masks into the weights and drop the pruning reparametrisation."""
        for m in module.modules():
            for hook in list(m._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    prune.remove(m, hook._tensor_name)
