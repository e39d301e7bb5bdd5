"""Checking a DeepSpeed checkpoint directory before anything in it is unpickled.

What is read, and how:

- ember's own part (the ``"ember"`` client state: loop position, callbacks,
  hyperparameters) and the saved weights come from
  ``<dir>/<tag>/*model_states.pt``, read by ember with
  ``torch.load(weights_only=True)``.
- DeepSpeed's ``engine.load_checkpoint`` then reads the model states and every
  rank's ``*optim_states.pt`` itself, with ``torch.load(weights_only=False)``:
  plain pickle, which can run code. ember cannot change that call. Before it,
  :func:`check_directory` lists the globals every ``*.pt`` file under the tag
  directory names (``torch.serialization.get_unsafe_globals_in_checkpoint``
  reads the pickle without running it) and refuses a file naming anything
  beyond what ``weights_only=True`` accepts and the few DeepSpeed classes of
  :data:`DEEPSPEED_GLOBALS` (plain records: a loss scaler, an enum, a
  dataclass). A refused directory fails with one line naming the file and the
  global: :class:`~ember.plugins.strategies.safe_dcp.UntrustedCheckpointError`.

This check narrows what a crafted directory can do; it does not make plain
pickle safe. Treat a DeepSpeed checkpoint directory as code: load only
directories you (or a run you trust) wrote.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from ember.plugins.strategies.safe_dcp import UntrustedCheckpointError

#: Globals DeepSpeed writes into its checkpoint files (besides what ``torch.load(weights_only=True)``
#: accepts). A configuration that writes another one is refused; add its dotted name here if you trust it.
DEEPSPEED_GLOBALS: set[str] = {
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
}


def _refuse(path: str, what: str) -> UntrustedCheckpointError:
    return UntrustedCheckpointError(
        f"{path}: refused to load a DeepSpeed checkpoint file that {what}; nothing from it was run. "
        "Load it only if you trust whoever wrote it (deepspeed's own engine.load_checkpoint runs whatever it holds)."
    )


def check_directory(path: str, tag: str) -> None:
    """Refuse the checkpoint ``path`` (tag ``tag``) if a ``*.pt`` file in it names an unexpected global."""
    root = os.path.join(path, tag)
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            if not name.endswith(".pt"):
                continue
            file = os.path.join(folder, name)
            try:
                found = torch.serialization.get_unsafe_globals_in_checkpoint(file)
            except Exception as exc:
                raise _refuse(file, f"is not a readable torch checkpoint ({type(exc).__name__})") from None
            unexpected = sorted(set(found) - DEEPSPEED_GLOBALS)
            if unexpected:
                raise _refuse(file, f"names {unexpected[0]}" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))


def load_model_states(model_file: str) -> dict[str, Any]:
    """The model states file (weights and ember's client state), weights-only."""
    try:
        return torch.load(model_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _refuse(model_file, f"torch.load(weights_only=True) will not load ({first})") from None


def load_full_weights(path: str, optimizer_marker: dict[str, Any]) -> dict[str, Any]:
    """``DeepSpeedStrategy(load_full_weights=True)``: a single-file ember checkpoint
    (full weights, as any other strategy writes it) instead of a DeepSpeed
    directory. The weights go into the module before the engine partitions it;
    loops, schedulers and callbacks resume as usual; the optimizer starts
    afresh (a plain optimizer state does not fit the engine's partitions)."""
    from ember.checkpointing import load_checkpoint_file

    checkpoint = dict(load_checkpoint_file(path, weights_only=True))
    if "optimizer_states" in checkpoint:
        checkpoint["optimizer_states"] = [dict(optimizer_marker) for _ in checkpoint["optimizer_states"]]
    return checkpoint


#: The tag under which ember's checkpoints sit inside the DeepSpeed checkpoint directory.
TAG = "ember"


def tag_of(path: str) -> str:
    """The tag to load from the DeepSpeed checkpoint directory ``path``: ember's, else what ``latest`` names."""
    if os.path.isdir(os.path.join(path, TAG)):
        return TAG
    latest = os.path.join(path, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            return f.read().strip()
    return TAG


def read_directory(path: str, zero_stage: int, optimizer_marker: dict[str, Any]) -> dict[str, Any]:
    """ember's part of the DeepSpeed checkpoint directory ``path`` (checked
    first, read weights-only): what the trainer restores, with ``optimizer_marker``
    for the optimizer state (the engine restores the real one) and, below
    ZeRO-3, the saved full weights."""
    tag = tag_of(path)
    # ZeRO 1/2 write mp_rank_00_model_states.pt; ZeRO-3 one zero_pp_rank_<r>_mp_rank_00_model_states.pt per rank.
    candidates = [os.path.join(path, tag, name) for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")]
    model_file = next((c for c in candidates if os.path.isfile(c)), None)
    if model_file is None:
        raise ValueError(f"{path!r} is not a DeepSpeed checkpoint written by ember: no model states file in {os.path.join(path, tag)}.")
    # Everything DeepSpeed will unpickle is checked first; ember's own part is read weights-only.
    check_directory(path, tag)
    saved = load_model_states(model_file)
    client = dict(saved.get("ember") or {})
    if not client:
        raise ValueError(f"{path!r} is a DeepSpeed checkpoint without ember's client state; it was not written by ember.")
    returned: dict[str, Any] = {**client, "state_dict": {}, "optimizer_states": [dict(optimizer_marker)]}
    # Filled by setup_module_and_optimizers once the engine restored the weights; for
    # stages that do not fit (validate/test/predict), the saved full weights.
    if "module" in saved and zero_stage != 3:
        prefix = "module."
        returned["state_dict"].update({k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in saved["module"].items()})
    return returned
