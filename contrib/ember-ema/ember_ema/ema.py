"""``EMA``: keep an exponential moving average of a module's weights during ``fit``.

The average is updated after optimizer steps. A step is detected by
``trainer.global_step`` having changed since the last ``on_train_batch_end``,
so gradient accumulation (several batches per step) needs nothing special.
With ``S = trainer.global_step`` after a step:

* while ``S <= start_step`` the average is a plain copy of the weights;
* afterwards, every ``update_every_n_steps``-th step (``(S - start_step) % n == 0``)
  each floating-point tensor becomes ``ema = decay * ema + (1 - decay) * w``.

Before the first step (``on_fit_start``) the average starts as a copy of the
weights, or as what a resumed checkpoint held. Integer buffers (such as a
batch norm's ``num_batches_tracked``) are copied, not averaged.

Tracked tensors are the module's parameters and buffers. They live on the
module's device, in the module's dtype.

While validation or test runs, the averaged weights are copied into the module
(``use_for_validation``), so every ``val_*`` / ``test_*`` metric describes the
averaged model. The training weights are put back at ``on_validation_end`` /
``on_test_end``, and also when the run raises or tears down.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

import ember

if TYPE_CHECKING:
    from ember import Module, Trainer

__all__ = ["EMA", "load_ema_weights"]


def _live_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``module`` by name, each tensor once (tied
    weights appear under their first name only, so they are averaged once)."""
    live: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        live[name] = tensor
    return live


class EMA(ember.Callback):
    """An exponential moving average of the module's weights.

    :param decay: weight of the old average at each update, in ``[0, 1]``;
        ``0.999`` averages over roughly the last thousand updates.
    :param update_every_n_steps: update the average on every n-th optimizer step.
    :param start_step: until ``trainer.global_step`` passes this value the
        average simply follows the weights (a warm-up that keeps the early,
        fast-moving weights out of it).
    :param use_for_validation: copy the averaged weights into the module for
        validation (sanity check included) and test runs, and back afterwards.
    :param swap_on_fit_end: at the end of ``fit``, leave the averaged weights
        in the module for good (the training weights are dropped).
    :param save_ema_state_dict: also store the averaged weights in every
        checkpoint as ``checkpoint["ema_state_dict"]``, a complete state dict
        that ``module.load_state_dict`` accepts, for deployment. The average
        is saved with the callback's state either way; this adds a copy that
        needs no ember to read.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        start_step: int = 0,
        use_for_validation: bool = True,
        swap_on_fit_end: bool = False,
        save_ema_state_dict: bool = False,
    ) -> None:
        decay = float(decay)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA(decay={decay}) must be between 0 and 1.")
        if int(update_every_n_steps) != update_every_n_steps or update_every_n_steps < 1:
            raise ValueError(f"EMA(update_every_n_steps={update_every_n_steps!r}) must be a positive integer.")
        if int(start_step) != start_step or start_step < 0:
            raise ValueError(f"EMA(start_step={start_step!r}) must be a non-negative integer.")
        self.decay = decay
        self.update_every_n_steps = int(update_every_n_steps)
        self.start_step = int(start_step)
        self.use_for_validation = bool(use_for_validation)
        self.swap_on_fit_end = bool(swap_on_fit_end)
        self.save_ema_state_dict = bool(save_ema_state_dict)
        self.num_updates = 0  # decay updates applied so far (copies during warm-up not counted)
        self._ema: dict[str, torch.Tensor] | None = None
        self._backup: dict[str, torch.Tensor] | None = None  # training weights while the average is swapped in
        self._last_step: int | None = None

    # ------------------------------------------------------------------ identity and state
    @property
    def state_key(self) -> str:
        # The decay is part of the key, so two averages with different decays
        # can run side by side and each gets its own state back on resume.
        return f"EMA{{decay={self.decay!r}}}"

    @property
    def ema_tensors(self) -> dict[str, torch.Tensor] | None:
        """The averaged tensors by parameter/buffer name (``None`` before ``fit``)."""
        return self._ema

    @property
    def swapped_in(self) -> bool:
        """Whether the module currently holds the averaged weights for evaluation."""
        return self._backup is not None

    def state_dict(self) -> dict[str, Any]:
        if self._ema is None:
            return {}
        return {
            "ema": dict(self._ema),
            "num_updates": self.num_updates,
            "decay": self.decay,
            "update_every_n_steps": self.update_every_n_steps,
            "start_step": self.start_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ema = state_dict.get("ema")
        if ema is None:
            return
        # Ember restores callback state before the module is moved to its
        # device; on_fit_start moves these tensors next to the weights.
        self._ema = {name: tensor.detach().clone() for name, tensor in ema.items()}
        self.num_updates = int(state_dict.get("num_updates", 0))

    # ------------------------------------------------------------------ the average
    def _adopt(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Make the stored average match ``module``: created from its weights when
        there is none, else checked and moved to the weights' device and dtype."""
        live = _live_tensors(module)
        if self._ema is None:
            self._ema = {name: t.detach().clone() for name, t in live.items()}
            return live
        missing = [n for n in live if n not in self._ema]
        unexpected = [n for n in self._ema if n not in live]
        mismatched = [
            f"{n}: {tuple(self._ema[n].shape)} vs {tuple(t.shape)}"
            for n, t in live.items()
            if n in self._ema and self._ema[n].shape != t.shape
        ]
        if missing or unexpected or mismatched:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:8])}")
            if unexpected:
                parts.append(f"unexpected {', '.join(unexpected[:8])}")
            if mismatched:
                parts.append(f"shape mismatches {'; '.join(mismatched[:8])}")
            raise ValueError(
                f"The restored EMA state does not fit {type(module).__name__} ({'; '.join(parts)}). "
                "Was the checkpoint written for a different model?"
            )
        self._ema = {n: self._ema[n].to(device=t.device, dtype=t.dtype) for n, t in live.items()}
        return live

    @torch.no_grad()
    def _update(self, module: torch.nn.Module, step: int) -> None:
        assert self._ema is not None
        live = _live_tensors(module)
        if step <= self.start_step:
            for name, tensor in live.items():
                self._ema[name].copy_(tensor)
            return
        if (step - self.start_step) % self.update_every_n_steps:
            return
        averaged_ema: list[torch.Tensor] = []
        averaged_live: list[torch.Tensor] = []
        for name, tensor in live.items():
            ema = self._ema[name]
            if ema.is_floating_point() or ema.is_complex():
                averaged_ema.append(ema)
                averaged_live.append(tensor.detach())
            else:
                ema.copy_(tensor)
        if averaged_ema:
            # ema = decay * ema + (1 - decay) * w, for all tensors at once
            torch._foreach_mul_(averaged_ema, self.decay)
            torch._foreach_add_(averaged_ema, averaged_live, alpha=1.0 - self.decay)
        self.num_updates += 1

    def ema_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``module.state_dict()`` with the averaged tensors in place of the
        weights: what ``module.load_state_dict`` needs to become the average."""
        if self._ema is None:
            raise RuntimeError("EMA.ema_state_dict(): there is no average yet; it is created when fit starts.")
        state = module.state_dict()
        backup = self._backup or {}
        for name in state:
            if name in self._ema:
                state[name] = self._ema[name].detach().clone()
            elif name in backup:  # swapped in: the module holds the average, the backup the weights
                state[name] = backup[name].detach().clone()
        return state

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Overwrite ``module``'s weights with the average (for good)."""
        if self._ema is None:
            raise RuntimeError("EMA.copy_to(): there is no average yet; it is created when fit starts.")
        self._backup = None
        for name, tensor in _live_tensors(module).items():
            if name in self._ema:
                tensor.copy_(self._ema[name])

    # ------------------------------------------------------------------ swapping for evaluation
    @torch.no_grad()
    def _swap_in(self, module: torch.nn.Module) -> None:
        if not self.use_for_validation or self._ema is None or self._backup is not None:
            return
        live = _live_tensors(module)
        if set(live) != set(self._ema) or any(self._ema[n].shape != t.shape for n, t in live.items()):
            warnings.warn(
                f"EMA: the average does not fit {type(module).__name__} any more; evaluating the training weights instead.",
                UserWarning,
                stacklevel=2,
            )
            return
        self._backup = {name: tensor.detach().clone() for name, tensor in live.items()}
        for name, tensor in live.items():
            tensor.copy_(self._ema[name])

    @torch.no_grad()
    def _swap_out(self, module: torch.nn.Module) -> None:
        if self._backup is None:
            return
        backup, self._backup = self._backup, None
        for name, tensor in _live_tensors(module).items():
            if name in backup:
                tensor.copy_(backup[name])

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        self._adopt(module)
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # no optimizer step this batch (accumulating, or skipped)
        self._last_step = step
        if self._ema is None:  # fit_start did not reach us (a custom loop): start here
            self._adopt(module)
        self._update(module, step)

    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        self._swap_in(module)

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        self._swap_out(module)

    def on_test_start(self, trainer: Trainer, module: Module) -> None:
        self._swap_in(module)

    def on_test_end(self, trainer: Trainer, module: Module) -> None:
        self._swap_out(module)

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        self._swap_out(module)

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._swap_out(module)

    def on_fit_end(self, trainer: Trainer, module: Module) -> None:
        self._swap_out(module)
        if self.swap_on_fit_end and self._ema is not None:
            self.copy_to(module)

    def on_save_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
        weights = checkpoint.get("state_dict")
        if self._backup is not None and isinstance(weights, dict):
            # Written while the average was swapped in (a callback saving during
            # validation before our on_validation_end): the checkpoint's weights
            # must be the training weights, or a resumed run would train the average.
            for name, tensor in self._backup.items():
                if name in weights:
                    weights[name] = tensor.detach().clone()
        if self.save_ema_state_dict and self._ema is not None and isinstance(weights, dict):
            checkpoint["ema_state_dict"] = {
                name: (self._ema[name].detach().clone() if name in self._ema else value) for name, value in weights.items()
            }


def load_ema_weights(module: torch.nn.Module, checkpoint: str | os.PathLike[str] | Mapping[str, Any], strict: bool = True) -> None:
    """Load the averaged weights from an ember checkpoint into ``module``.

    ``checkpoint`` is a path or an already loaded checkpoint dictionary. The
    checkpoint's ``ema_state_dict`` is used when present (``save_ema_state_dict=True``);
    otherwise the average saved with the callback's state is laid over the
    checkpoint's ``state_dict``. Raises ``KeyError`` when the checkpoint holds no
    average, and ``ValueError`` when it holds several (one per decay) and no
    ``ema_state_dict``.
    """
    if not isinstance(checkpoint, Mapping):
        checkpoint = torch.load(os.fspath(checkpoint), map_location="cpu", weights_only=True)
    state = checkpoint.get("ema_state_dict")
    if state is None:
        found = [
            value["ema"]
            for key, value in (checkpoint.get("callbacks") or {}).items()
            if str(key).startswith("EMA{") and isinstance(value, Mapping) and "ema" in value
        ]
        if not found:
            raise KeyError("The checkpoint holds no EMA weights (no 'ema_state_dict' and no EMA callback state).")
        if len(found) > 1:
            raise ValueError("The checkpoint holds several EMA averages; load the one you want from checkpoint['callbacks'].")
        state = {**checkpoint["state_dict"], **{k: v for k, v in found[0].items() if k in checkpoint["state_dict"]}}
    module.load_state_dict(state, strict=strict)
