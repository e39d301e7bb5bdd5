"""How the ``fsdp`` strategy writes and reads checkpoints (see
:mod:`ember.plugins.strategies.fsdp` for the two formats): sharded
directories through ``torch.distributed.checkpoint`` (optionally in a
background thread, published by an atomic rename), or one full file gathered
on rank zero; loading follows what is on disk.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from typing import Any

import torch

from ember.plugins.strategies import safe_dcp

#: Name of the file, inside a sharded checkpoint directory, that holds everything but the shards.
META_FILE = "meta.pt"
#: Key of ``meta.pt`` describing the sharded part.
SHARDED_KEY = "fsdp_sharded"


def is_sharded_checkpoint(path: str) -> bool:
    """Whether ``path`` is a directory written by the ``fsdp`` strategy in sharded mode."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, META_FILE))


# --------------------------------------------------------------------------- optimizer-state key conversion


def _param_names(module: torch.nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in module.named_parameters()}


def optimizer_state_to_ids(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter names (``get_optimizer_state_dict``'s
    form) → the form ``Optimizer.state_dict()`` has (parameters numbered in
    param-group order), so a plain optimizer can load it."""
    numbering: dict[str, int] = {}
    groups = []
    for group in state.get("param_groups", []):
        ids = []
        for name in group["params"]:
            numbering.setdefault(name, len(numbering))
            ids.append(numbering[name])
        groups.append({**group, "params": ids})
    return {"state": {numbering[k]: v for k, v in state.get("state", {}).items() if k in numbering}, "param_groups": groups}


def optimizer_state_to_names(state: dict[str, Any], optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> dict[str, Any]:
    """The inverse of :func:`optimizer_state_to_ids` for ``optimizer`` (whose
    parameters belong to ``module``)."""
    names = _param_names(module)
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = []
    for group in state.get("param_groups", []):
        groups.append({**group, "params": [order[i] for i in group["params"]]})
    return {"state": {order[int(k)]: v for k, v in state.get("state", {}).items()}, "param_groups": groups}


class FSDPCheckpoints:
    """Mixed into :class:`~ember.plugins.strategies.fsdp.FSDPStrategy`: its
    checkpoint members. Uses the strategy's ``state_dict_type``,
    ``async_save``, ``checkpoint_io``, ranks and collectives, and the sharded
    module and optimizers it set up."""

    _module: torch.nn.Module | None
    _optimizers: list[torch.optim.Optimizer]
    _pending_load: dict[str, Any] | None
    _save_future: Any
    _finish_save: Callable[[], None] | None
    _ckpt_group: Any

    def _options(self, full: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True) if full else StateDictOptions()

    # ----------------------------------------------------------------- saving
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        self._group_ready("a checkpoint save")  # raises once this rank failed: the save is collective
        self.wait_for_checkpoint()
        module = self._module
        if module is None:
            return super().save_checkpoint(checkpoint, path)
        if self.state_dict_type == "full":
            return self._save_full(checkpoint, path, module)
        return self._save_sharded(checkpoint, path, module)

    def _save_full(self, checkpoint: dict[str, Any], path: str, module: torch.nn.Module) -> None:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        if "optimizer_states" in checkpoint:
            checkpoint["optimizer_states"] = [
                optimizer_state_to_ids(get_optimizer_state_dict(module, opt, options=self._options(full=True))) for opt in self._optimizers
            ]
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, path)

    def _save_sharded(self, checkpoint: dict[str, Any], path: str, module: torch.nn.Module) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        path = os.path.abspath(path)
        if os.path.isfile(path):
            raise FileExistsError(
                f"fsdp: {path!r} is a file, but sharded checkpoints are directories. "
                "Remove it, choose another path, or use FSDPStrategy(state_dict_type='full')."
            )
        with_optimizers = "optimizer_states" in checkpoint
        state: dict[str, Any] = {"model": get_model_state_dict(module)}
        if with_optimizers:
            state["optim"] = get_optimizer_state_dict(module, self._optimizers)
        meta = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
        meta[SHARDED_KEY] = {
            "format": "torch.distributed.checkpoint",
            "world_size": self.world_size,
            "with_optimizers": with_optimizers,
            "param_groups_per_optimizer": [len(opt.param_groups) for opt in self._optimizers] if with_optimizers else [],
        }
        # Every rank writes into the same temporary directory (rank zero names it).
        tmp = self.broadcast(os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}"))
        if self.is_global_zero:
            os.makedirs(tmp, exist_ok=True)
            self.checkpoint_io.save_checkpoint(meta, os.path.join(tmp, META_FILE))
        self.barrier("fsdp_save_start")
        if self.async_save:
            self._save_future = dcp.async_save(state, checkpoint_id=tmp, process_group=self._ckpt_group)
        else:
            dcp.save(state, checkpoint_id=tmp)
        finish = _Publish(tmp, path) if self.is_global_zero else None
        if self.async_save:
            self._finish_save = finish
        elif finish is not None:
            finish()

    def wait_for_checkpoint(self) -> None:
        """Block until a background (``async_save``) write is on disk and published."""
        future, self._save_future = self._save_future, None
        finish, self._finish_save = self._finish_save, None
        if future is not None:
            result = getattr(future, "result", None)
            if result is None:  # an AsyncSaveResponse
                future = future.upload_completion
            future.result()
        if finish is not None:
            finish()

    # ----------------------------------------------------------------- loading
    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Read the non-weight part now; the weights and optimizer states are
        loaded into the sharded module and optimizers in ``setup_module`` /
        ``setup_optimizers``, after which ``checkpoint["state_dict"]`` and
        ``checkpoint["optimizer_states"]`` hold their current (sharded) state,
        so that the trainer's own ``load_state_dict`` calls change nothing."""
        self.wait_for_checkpoint()
        self.barrier("fsdp_load")  # a save another rank published must be visible
        if os.path.isdir(path):
            if not is_sharded_checkpoint(path):
                raise FileNotFoundError(f"fsdp: {path!r} is a directory but not a sharded ember checkpoint (it has no {META_FILE}).")
            safe_dcp.read_metadata(path)  # refuse a planted .metadata now, before any set-up
            meta = self.checkpoint_io.load_checkpoint(os.path.join(path, META_FILE))
            info = meta.get(SHARDED_KEY, {})
            meta["state_dict"] = {}
            with_optimizers = bool(info.get("with_optimizers"))
            if with_optimizers:
                meta["optimizer_states"] = []
            self._pending_load = {"kind": "sharded", "path": path, "checkpoint": meta, "with_optimizers": with_optimizers}
            return meta
        checkpoint = self.checkpoint_io.load_checkpoint(path)
        if "state_dict" in checkpoint:
            self._pending_load = {
                "kind": "full",
                "path": path,
                "checkpoint": checkpoint,
                "state_dict": checkpoint["state_dict"],
                "optimizer_states": checkpoint.get("optimizer_states"),
                "with_optimizers": "optimizer_states" in checkpoint,
            }
            checkpoint["state_dict"] = {}
            if "optimizer_states" in checkpoint:
                checkpoint["optimizer_states"] = []
        return checkpoint

    def _load_model_state(self, module: torch.nn.Module) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

        pending = self._pending_load
        assert pending is not None
        if pending["kind"] == "sharded":
            state = {"model": get_model_state_dict(module)}
            safe_dcp.load(state, pending["path"])
            set_model_state_dict(module, state["model"])
        else:
            set_model_state_dict(module, pending.pop("state_dict"), options=StateDictOptions(full_state_dict=True))
        pending["checkpoint"]["state_dict"].update(module.state_dict())
        if not pending["with_optimizers"]:
            self._pending_load = None

    def _load_optimizer_states(self) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        pending, self._pending_load = self._pending_load, None
        assert pending is not None and self._module is not None
        module, optimizers = self._module, self._optimizers
        target = pending["checkpoint"].get("optimizer_states")
        if pending["kind"] == "sharded":
            state = {"optim": get_optimizer_state_dict(module, optimizers)}
            safe_dcp.load(state, pending["path"])
            set_optimizer_state_dict(module, optimizers, state["optim"])
        else:
            saved = pending.get("optimizer_states") or []
            if len(saved) != len(optimizers):
                # Leave it to the trainer to report the mismatch.
                if target is not None:
                    target[:] = saved
                return
            for opt, opt_state in zip(optimizers, saved, strict=True):
                named = optimizer_state_to_names(opt_state, opt, module)
                set_optimizer_state_dict(module, opt, named, options=StateDictOptions(full_state_dict=True))
        if target is not None:
            target[:] = [opt.state_dict() for opt in optimizers]

    def remove_checkpoint(self, path: str) -> None:
        self.wait_for_checkpoint()
        if self.is_global_zero:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                self.checkpoint_io.remove_checkpoint(path)


class _Publish:
    """Rank zero's last step of a sharded save: move the finished temporary
    directory to its final name (replacing an older checkpoint there)."""

    def __init__(self, tmp: str, path: str) -> None:
        self.tmp = tmp
        self.path = path

    def __call__(self) -> None:
        if os.path.isdir(self.path):
            old = f"{self.tmp}.old"
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
