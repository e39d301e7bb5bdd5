"""What a checkpoint holds, and how a trainer restores one.

A single-process checkpoint is one file that ``torch.load(path,
weights_only=True)`` opens. Its top-level keys:

``ember_version``      the version that wrote it
``epoch``, ``global_step``  where training was
``state_dict``         the module's weights
``hyper_parameters``   what ``save_hyperparameters`` recorded
``loops``              loop positions (``{"fit": {...}}``)
``optimizer_states``, ``lr_schedulers``, ``precision``  (absent with ``weights_only``)
``callbacks``          ``{state_key: state}`` of every callback with state
``datamodule``         the DataModule's ``state_dict()``

Beside the checkpoints, ``ModelCheckpoint`` keeps a small record,
``ember_checkpoints.json`` (:data:`RECORD_FILE`), of which file is the best
(and its score) and which the last, so that ``ckpt_path="best"`` / ``"last"``
resolve in a new process too (:func:`resolve_named_checkpoint`).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import warnings
from typing import TYPE_CHECKING, Any

import torch
from packaging.version import InvalidVersion, Version

from ember._version import __version__
from ember.hparams import checkpoint_safe

if TYPE_CHECKING:
    from ember.trainer import Trainer

#: Checkpoints written by versions older than this cannot be restored.
OLDEST_COMPATIBLE = Version("0.1.0")


class CheckpointError(RuntimeError):
    """A checkpoint does not fit what it is being loaded into."""


class MissingCheckpointError(CheckpointError, ValueError):
    """``ckpt_path="best"`` / ``"last"`` names no file: nothing is recorded where ember looked."""


def default_checkpoint_io() -> Any:
    """The checkpoint IO a run uses when none is configured: the role
    registry's ``checkpoint_io`` named ``"torch"``, from the plugins the
    environment allows (``EMBER_DISABLE_PLUGINS`` and friends), as a
    Trainer resolves it."""
    from ember.plugin_manager import default_plugin_manager

    return default_plugin_manager().build_registry().create("checkpoint_io", "torch")


def load_checkpoint_file(path: str, map_location: Any = None, weights_only: bool | None = None, checkpoint_io: Any = None) -> dict[str, Any]:
    """Read a checkpoint with ``checkpoint_io`` (a :class:`ember.roles.CheckpointIO`;
    default :func:`default_checkpoint_io`); ``weights_only=False`` unpickles
    anything with ``torch.load`` (only for files you trust)."""
    if weights_only is False:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    else:
        checkpoint = (checkpoint_io if checkpoint_io is not None else default_checkpoint_io()).load_checkpoint(path)
    check_compatible(checkpoint, path)
    if map_location is not None:
        checkpoint["state_dict"] = {
            k: v.to(map_location) if isinstance(v, torch.Tensor) else v for k, v in checkpoint["state_dict"].items()
        }
    return checkpoint


def read_hparams_file(path: Any) -> dict[str, Any]:
    """The hyperparameters in a YAML file (``{}`` for ``None``)."""
    if path is None:
        return {}
    try:
        import yaml
    except ImportError as exc:
        raise ImportError("hparams_file= needs PyYAML: pip install pyyaml") from exc

    with open(path, encoding="utf-8") as f:
        loaded = yaml.safe_load(f) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"hparams_file={str(path)!r} must hold a YAML mapping of hyperparameters, not {type(loaded).__name__}.")
    return loaded


def check_compatible(checkpoint: dict[str, Any], path: str) -> None:
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path!r} is not an ember checkpoint: it has no 'state_dict' (keys: {', '.join(map(str, list(checkpoint)[:8]))}). "
            "Pass a file written by ember (trainer.save_checkpoint or ModelCheckpoint)."
        )
    version = checkpoint.get("ember_version")
    if version is None:
        return  # a foreign checkpoint with a state_dict: weights can still be loaded
    try:
        written = Version(str(version))
    except InvalidVersion:
        raise CheckpointError(f"{path!r} records an unreadable ember version {version!r}.") from None
    if written < OLDEST_COMPATIBLE or written.major > Version(__version__).major:
        raise CheckpointError(
            f"{path!r} was written by ember {written}, which this ember ({__version__}) cannot restore "
            f"(compatible: {OLDEST_COMPATIBLE} to {Version(__version__).major}.x). Install a matching ember to resume it."
        )


def dump(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """Assemble the checkpoint of ``trainer``'s current state."""
    module = trainer.module
    checkpoint: dict[str, Any] = {
        "ember_version": __version__,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "state_dict": trainer.strategy.module_state_dict(module),
        "loops": {"fit": trainer._loop_state()},
    }
    if module._hparams:
        checkpoint["hyper_parameters"] = checkpoint_safe(dict(module._hparams))
    datamodule = trainer.datamodule
    if datamodule is not None and datamodule._hparams:
        checkpoint["datamodule_hyper_parameters"] = checkpoint_safe(dict(datamodule._hparams))
    paused = trainer.state.position.paused  # fit stopped at max_steps inside an epoch: continue that epoch
    if paused is not None:
        checkpoint["loops"]["fit"]["callback_metrics"] = paused["callback_metrics"]
    checkpoint["epoch"] = checkpoint["loops"]["fit"].get("epoch", trainer.current_epoch)
    if not weights_only:
        checkpoint["optimizer_states"] = [opt.state_dict() for opt in trainer.optimizers]
        if paused is not None:
            checkpoint["lr_schedulers"] = copy.deepcopy(paused["lr_schedulers"])
            for state, groups in zip(checkpoint["optimizer_states"], paused["param_groups"], strict=False):
                state["param_groups"] = copy.deepcopy(groups)  # the learning rates before the epoch-end scheduler step
        else:
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
        checkpoint["precision"] = trainer.strategy.precision.state_dict()
        callback_states = {}
        for observer in trainer._stateful_observers():
            state = observer.state_dict()
            if state:
                callback_states[observer.state_key] = state
        checkpoint["callbacks"] = callback_states
        if datamodule is not None:
            checkpoint["datamodule"] = datamodule.state_dict()
        for fn in trainer._dispatch.on_save_checkpoint if trainer._dispatch is not None else ():
            fn(trainer, module, checkpoint)
    return checkpoint


def pause_state(trainer: Trainer) -> dict[str, Any]:
    """The loop position and LR scheduler states when ``fit`` stops at
    ``max_steps`` inside an epoch, taken before the epoch-end hooks and the
    epoch-interval scheduler step, which the uninterrupted run does only at
    the epoch's real end: a checkpoint written afterwards resumes inside the
    epoch, bit-identical to a run that never stopped."""
    from ember.loops.position import position_state

    loop = {"epoch": trainer.current_epoch, **position_state(trainer)}
    metrics = trainer._loop_state()["callback_metrics"]
    schedulers = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
    groups = [opt.state_dict()["param_groups"] for opt in trainer.optimizers]
    return copy.deepcopy({"loop": loop, "callback_metrics": metrics, "lr_schedulers": schedulers, "param_groups": groups})


def restore_module(trainer: Trainer, checkpoint: dict[str, Any], path: str, strict: bool = True) -> None:
    """Load the trainer's module weights from ``checkpoint``."""
    load_weights(trainer.module, checkpoint, path, strict)


def load_weights(module: torch.nn.Module, checkpoint: dict[str, Any], path: str, strict: bool = True) -> None:
    """Load weights, reporting a mismatch by key and shape and naming the file."""
    state = checkpoint["state_dict"]
    own = module.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs module {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if mismatched or (strict and (missing or unexpected)):
        lines = []
        if missing:
            lines.append(f"missing keys: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            lines.append(f"unexpected keys: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}")
        if mismatched:
            lines.append(f"shape mismatches: {'; '.join(mismatched[:10])}")
        raise CheckpointError(
            f"Checkpoint {path!r} does not fit {type(module).__name__}: " + "; ".join(lines) + ". "
            "Was it written for a different model or configuration? Check the model's init arguments "
            "(the checkpoint's 'hyper_parameters' records them)."
        )
    module.load_state_dict(state, strict=strict)


def restore_observers(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Callbacks', loggers' and the DataModule's state. Runs before the
    ``setup`` hooks, so that a logger reopens its run before anything is written."""
    states = checkpoint.get("callbacks", {})
    for observer in trainer._stateful_observers():
        if observer.state_key in states:
            observer.load_state_dict(states[observer.state_key])
    if trainer.datamodule is not None and "datamodule" in checkpoint:
        trainer.datamodule.load_state_dict(checkpoint["datamodule"])


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any], path: str) -> None:
    """``on_load_checkpoint`` hooks, then optimizers, schedulers and precision."""
    for fn in trainer._dispatch.on_load_checkpoint:
        fn(trainer, trainer.module, checkpoint)
    if "optimizer_states" not in checkpoint:
        raise CheckpointError(
            f"{path!r} holds weights only (saved with weights_only=True), so training cannot resume from it. "
            "Load it with Module.load_from_checkpoint, or resume from a full checkpoint."
        )
    opt_states = checkpoint["optimizer_states"]
    if len(opt_states) != len(trainer.optimizers):
        raise CheckpointError(
            f"{path!r} holds {len(opt_states)} optimizer state(s) but configure_optimizers returned {len(trainer.optimizers)}."
        )
    for opt, state in zip(trainer.optimizers, opt_states, strict=False):
        opt.load_state_dict(state)
    sched_states = checkpoint.get("lr_schedulers", [])
    if len(sched_states) != len(trainer.lr_scheduler_configs):
        raise CheckpointError(
            f"{path!r} holds {len(sched_states)} LR scheduler state(s) but configure_optimizers returned {len(trainer.lr_scheduler_configs)}."
        )
    for config, state in zip(trainer.lr_scheduler_configs, sched_states, strict=False):
        config.scheduler.load_state_dict(state)
    trainer.strategy.precision.load_state_dict(checkpoint.get("precision", {}))


# --------------------------------------------------------------------------- records beside the checkpoints

#: The record ``ModelCheckpoint`` keeps in its directory.
RECORD_FILE = "ember_checkpoints.json"


def read_record(directory: str) -> dict[str, Any] | None:
    """The directory's record, or ``None`` when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(directory, RECORD_FILE), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("callbacks"), dict):
        return None
    return record


def _recorded(directory: str, which: str) -> tuple[float, str] | None:
    """``(when, path)`` of the newest ``which`` (``"best"``/``"last"``) file
    the directory's record names that still exists. Only plain names inside
    the directory count: a record cannot point anywhere else."""
    record = read_record(directory)
    if record is None:
        return None
    found = []
    for entry in record["callbacks"].values():
        name = entry.get(f"{which}_model_path") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", ".."):
            continue
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            ranked = which != "best" or entry.get("monitor") is not None  # a monitored best beats "the latest"
            found.append((ranked, float(entry.get("updated", 0)), path))
    if not found:
        return None
    _, when, path = max(found)
    return when, path


def _candidate_dirs(trainer: Trainer) -> tuple[list[str], list[str]]:
    """Checkpoint directories the trainer's configuration names, and those
    found under ``default_root_dir`` (``checkpoints``, ``*/checkpoints``,
    ``*/*/checkpoints``: a logger's version directories)."""
    named = [os.fspath(d) for d in (getattr(cb, "dirpath", None) for cb in trainer.checkpoint_callbacks) if d]
    root = trainer.default_root_dir
    found = [os.path.join(root, "checkpoints")]
    for pattern in ("*/checkpoints", "*/*/checkpoints"):
        found += sorted(glob.glob(os.path.join(glob.escape(root), pattern)))
    return named, [d for d in found if os.path.isdir(d)]


def resolve_named_checkpoint(trainer: Trainer, which: str, stage: str) -> str | None:
    """The file ``ckpt_path="best"`` or ``"last"`` names: the checkpoint
    callbacks' own records when this trainer trained; else, on disk, in the
    configured checkpoint directories (or, without one, those under
    ``default_root_dir``): for ``"best"`` the newest record's best file, for
    ``"last"`` the newest checkpoint file."""
    attr = f"{which}_model_path"
    for cb in trainer.checkpoint_callbacks:
        path = getattr(cb, attr, "") or ""
        if path and os.path.isfile(path):
            return path
    named, found = _candidate_dirs(trainer)
    for dirs in (named, found) if named else (found,):
        if which == "last":
            hit = _newest_checkpoint(dirs)
        else:
            hit = max((h for d in dirs if (h := _recorded(d, which)) is not None), default=(0.0, None))[1]
        if hit is not None:
            return hit
    root = trainer.default_root_dir
    searched = ", ".join(named or [os.path.join(root, "checkpoints"), os.path.join(root, "*", "*", "checkpoints")])
    if stage == "fit" and which == "last":
        warnings.warn(f"ckpt_path='last': no checkpoint found in {searched}, so training starts from scratch.", stacklevel=5)
        return None
    what = "is recorded" if which == "best" else "was found"
    raise MissingCheckpointError(
        f"ckpt_path={which!r}: no {which} checkpoint {what} in {searched} (ModelCheckpoint records the best one in {RECORD_FILE} "
        "while training). Point default_root_dir (or the ModelCheckpoint's dirpath) at the training run's directory, "
        "or pass the checkpoint file's path."
    )


def _newest_checkpoint(dirs: list[str]) -> str | None:
    found = []
    for d in dirs:
        for path in glob.glob(os.path.join(glob.escape(d), "*.ckpt")):  # hidden (temporary) files never match
            if os.path.isfile(path):
                found.append((os.path.getmtime(path), path))
    return max(found)[1] if found else None
