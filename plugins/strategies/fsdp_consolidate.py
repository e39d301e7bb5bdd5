"""``ember checkpoint consolidate DIR OUT``: a sharded ``fsdp`` checkpoint → one file.

A sharded checkpoint (``FSDPStrategy(state_dict_type="sharded")``) is a
directory: the shards written by ``torch.distributed.checkpoint`` plus
``meta.pt``, the rest of ember's checkpoint. :func:`consolidate` reads the
shards in this one process (no process group, any number of writers) and
writes an ordinary ember checkpoint file: ``state_dict`` holds the full
weights under the module's own parameter names, ``optimizer_states`` the
optimizers' state in the form ``Optimizer.state_dict()`` has, and every other
key comes from ``meta.pt``. ``torch.load(OUT, weights_only=True)`` opens it,
``Module.load_from_checkpoint`` and a single-device ``Trainer(ckpt_path=OUT)``
can use it.

This module is the fsdp plugin's command: ``ember`` loads it through the
``add_commands`` hook (:mod:`ember.commands.registry`), so the kernel knows
nothing of the sharded file format. Only the standard library and pluggy's
marker are imported at module level (``ember --help`` stays fast); torch is
imported when a checkpoint is consolidated.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Any

from ember.plugin_manager import hookimpl


class ConsolidateError(Exception):
    """The directory cannot be consolidated; the message names it and says why."""


def consolidate(sharded_dir: str | os.PathLike[str], output_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the sharded checkpoint in ``sharded_dir`` as one checkpoint file
    ``output_file``; returns the checkpoint written."""
    from ember.plugins.checkpoint_io.torch_io import TorchCheckpointIO
    from ember.plugins.strategies import safe_dcp
    from ember.plugins.strategies.fsdp_checkpoint import META_FILE, SHARDED_KEY, optimizer_state_to_ids

    sharded_dir, output_file = os.fspath(sharded_dir), os.fspath(output_file)
    if not os.path.isdir(sharded_dir):
        raise ConsolidateError(f"{sharded_dir!r} is not a directory; a sharded checkpoint is a directory written by the fsdp strategy.")
    meta_path = os.path.join(sharded_dir, META_FILE)
    if not os.path.isfile(meta_path) or not os.path.isfile(os.path.join(sharded_dir, ".metadata")):
        raise ConsolidateError(
            f"{sharded_dir!r} is not a complete sharded ember checkpoint: it needs {META_FILE} and .metadata "
            "(an interrupted save leaves a hidden .tmp-* directory instead)."
        )
    if os.path.abspath(output_file).startswith(os.path.abspath(sharded_dir) + os.sep):
        raise ConsolidateError(f"Write the consolidated file outside the checkpoint directory, not to {output_file!r}.")
    io = TorchCheckpointIO()
    meta = io.load_checkpoint(meta_path)
    info = meta.pop(SHARDED_KEY, {})
    # Never PyTorch's dcp_to_torch_save: it unpickles .metadata and non-tensor values with plain pickle.
    shards = safe_dcp.load_full(sharded_dir)
    if "model" not in shards:
        raise ConsolidateError(f"{sharded_dir!r} holds no model state (keys: {', '.join(map(str, shards))}).")
    checkpoint = dict(meta)
    checkpoint["state_dict"] = shards["model"]
    if "optim" in shards:
        merged = shards["optim"]
        groups = merged.get("param_groups", [])
        sizes = list(info.get("param_groups_per_optimizer") or [len(groups)])
        states = []
        start = 0
        for size in sizes:
            part = groups[start : start + size]
            start += size
            names = {name for group in part for name in group["params"]}
            states.append(
                optimizer_state_to_ids({"state": {k: v for k, v in merged.get("state", {}).items() if k in names}, "param_groups": part})
            )
        checkpoint["optimizer_states"] = states
    checkpoint["consolidated_from"] = {"path": os.path.abspath(sharded_dir), "world_size": info.get("world_size")}
    io.save_checkpoint(checkpoint, output_file)
    return checkpoint


# --------------------------------------------------------------------------- command line


@hookimpl
def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``consolidate`` to the actions of the ``ember checkpoint`` group."""
    from ember.commands.registry import subcommands

    p = subcommands(subparsers.choices["checkpoint"]).add_parser(
        "consolidate",
        help="turn a sharded (fsdp) checkpoint directory into one checkpoint file",
        description=(
            "Read a sharded checkpoint directory written by the fsdp strategy (in this one process, whatever the "
            "number of processes that wrote it) and write one ordinary ember checkpoint file that "
            "torch.load(weights_only=True), Module.load_from_checkpoint and a single-device run can open."
        ),
        allow_abbrev=False,
    )
    p.add_argument("path", metavar="DIR", help="the sharded checkpoint directory")
    p.add_argument("output", metavar="OUT", help="the checkpoint file to write")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        checkpoint = consolidate(args.path, args.output)
    except (ConsolidateError, FileNotFoundError, pickle.UnpicklingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(checkpoint["state_dict"])
    opts = len(checkpoint.get("optimizer_states", []))
    print(
        f"wrote {args.output}: {n} weight tensor(s), {opts} optimizer state(s), epoch {checkpoint.get('epoch')}, step {checkpoint.get('global_step')}"
    )
    return 0
