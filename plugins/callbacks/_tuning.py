"""What the tuners (``LearningRateFinder``, ``BatchSizeFinder``) share.

Both try things out before the real run: they train a deep copy of the module
with a separate, quiet inner :class:`ember.Trainer` on the same device, so the
real module, its optimizer (not yet built when they run) and the random number
generators are exactly as they were, and only the value they found is applied.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import tempfile
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from ember.seed import isolated_rng

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

#: Messages of errors that mean the device ran out of memory.
OOM_MESSAGES = ("out of memory", "can't allocate memory", "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_SUPPORTED")

#: Set on the copies the tuners train, so that a tuner among the copy's own
#: ``configure_callbacks`` does not start tuning again inside the inner run.
TUNING_FLAG = "_ember_tuning_copy"


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or the host) ran out of memory."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MESSAGES)


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_tuning_copy(module: Module) -> bool:
    return bool(getattr(module, TUNING_FLAG, False))


def copy_module(module: Module) -> Module:
    """A deep copy of ``module`` without its link to the trainer (nor what the
    trainer put on it), marked as a tuning copy."""
    memo: dict[int, Any] = {}
    for attr in ("_trainer", "_results"):
        linked = module.__dict__.get(attr)
        if linked is not None:
            memo[id(linked)] = None
    clone = copy.deepcopy(module, memo)
    object.__setattr__(clone, TUNING_FLAG, True)
    object.__setattr__(clone, "_device", None)
    return clone


def inner_trainer(trainer: Trainer, callbacks: list[Any], max_steps: int, root: str, **overrides: Any) -> Any:
    """A quiet single-device trainer on ``trainer``'s device and precision:
    no logger, checkpoints, progress bar, summary, sanity check or validation."""
    import ember

    device = trainer.strategy.root_device
    kwargs: dict[str, Any] = {
        "accelerator": device.type,
        "devices": [device.index] if device.index is not None else 1,
        "strategy": "single_device",
        "precision": trainer.precision,
        "max_steps": max_steps,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": trainer.gradient_clip_algorithm,
        "logger": False,
        "callbacks": callbacks,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_fault_tolerance": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "default_root_dir": root,
        **overrides,
    }
    return ember.Trainer(**kwargs)


@contextlib.contextmanager
def trial_scope() -> Iterator[str]:
    """Random state put back afterwards, the inner runs' warnings hidden (the
    real run shows its own), and a scratch directory for the inner trainer."""
    with isolated_rng(), warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="ember-tuning-") as root:
        warnings.simplefilter("ignore")
        yield root


def train_loader_for_trial(trainer: Trainer, module: Module) -> Any:
    """The training data the inner run should use: the loaders given to
    ``fit()``, else the DataModule's ``train_dataloader()``; ``None`` means the
    (copied) module's own ``train_dataloader()``."""
    explicit = trainer.explicit_dataloaders
    if explicit.get("train") is not None:
        return explicit["train"]
    datamodule = trainer.datamodule
    if datamodule is not None and _overrides(datamodule, "train_dataloader"):
        return datamodule.train_dataloader()
    return None


def _overrides(obj: Any, name: str) -> bool:
    from ember.datamodule import DataModule

    return getattr(type(obj), name, None) is not getattr(DataModule, name, None)


# --------------------------------------------------------------------------- attributes in objects or their hparams


def has_attr(obj: Any, name: str) -> bool:
    if obj is None:
        return False
    if name in obj.__dict__ or hasattr(type(obj), name):
        return True
    hparams = getattr(obj, "hparams", None)
    return isinstance(hparams, dict) and name in hparams


def get_attr(obj: Any, name: str) -> Any:
    if name in obj.__dict__ or hasattr(type(obj), name):
        return getattr(obj, name)
    return obj.hparams[name]


def set_attr(obj: Any, name: str, value: Any) -> None:
    """Set ``obj.name`` where it exists, and ``obj.hparams[name]`` where that
    exists (so checkpoints and loggers see the value too)."""
    if name in obj.__dict__ or hasattr(type(obj), name):
        setattr(obj, name, value)
    hparams = getattr(obj, "hparams", None)
    if isinstance(hparams, dict) and name in hparams:
        hparams[name] = value
