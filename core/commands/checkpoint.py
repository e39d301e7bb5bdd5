"""``ember checkpoint inspect PATH [--json]``: what a checkpoint file holds.

The file is read through the built-in checkpoint IO, i.e. with
``torch.load(weights_only=True)``: nothing but tensors, numbers, strings and
containers of them is unpickled, and the model is never instantiated, so
inspecting a file from an unknown source is safe. Everything here is
imported lazily by :mod:`ember.commands.main` (``ember --help`` does not import torch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

#: Optimizer param-group entries that are bookkeeping, not hyperparameters.
_GROUP_SKIP = {"params", "param_names"}
#: LR-scheduler state entries worth showing (the rest are internals or callables).
_SCHEDULER_KEYS = ("last_epoch", "_step_count", "base_lrs", "_last_lr", "total_steps", "T_max", "eta_min", "step_size", "gamma")


class InspectError(Exception):
    """The file cannot be inspected; the message names it and says why."""


def add_parser(sub: Any) -> None:
    """Add the ``checkpoint`` command group to ``ember``'s subparsers."""
    group = sub.add_parser(
        "checkpoint",
        help="look inside checkpoint files",
        description="Look inside checkpoint files without loading any model code.",
        allow_abbrev=False,
    )
    group.set_defaults(checkpoint_parser=group)
    actions = group.add_subparsers(dest="checkpoint_command", metavar="ACTION")
    p = actions.add_parser(
        "inspect",
        help="show a checkpoint's provenance and contents",
        description=(
            "Show what a checkpoint holds: the ember version that wrote it, epoch and step, the fit loop position, "
            "weights, optimizer and scheduler state, callbacks, hyperparameters. The file is read with "
            "torch.load(weights_only=True): no code in it runs and the model is not built."
        ),
        allow_abbrev=False,
    )
    p.add_argument("path", metavar="PATH", help="the checkpoint file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--keys", type=int, default=10, metavar="N", help="how many weight tensors to list (default 10; 0 for none, -1 for all)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "checkpoint_command", None) is None:
        args.checkpoint_parser.print_help(sys.stderr)
        return 2
    try:
        report = inspect_checkpoint(args.path, max_keys=args.keys)
    except InspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, default=repr))
    else:
        print(format_report(report))
    return 0


# --------------------------------------------------------------------------- reading


def _load(path: str) -> dict[str, Any]:
    from ember.plugins.checkpoint_io.torch_io import CheckpointLoadError, TorchCheckpointIO

    if os.path.isdir(path):
        raise InspectError(f"{path!r} is a directory, not a checkpoint file.")
    if not os.path.exists(path):
        raise InspectError(f"{path!r} does not exist.")
    if os.path.getsize(path) == 0:
        raise InspectError(f"{path!r} is empty (0 bytes): its write never finished or it was truncated. Use an earlier checkpoint.")
    try:
        return TorchCheckpointIO().load_checkpoint(path)
    except FileNotFoundError as exc:
        raise InspectError(str(exc)) from None
    except Exception as exc:
        if not _looks_like_torch_file(path):
            # torch.load reads anything that is not a zip archive as a legacy
            # pickle, so damaged bytes surface as odd unpickling errors.
            raise InspectError(
                f"Could not read checkpoint {path!r}: it is neither a torch zip archive nor a legacy torch file, so it is "
                "corrupted or in some other format. Use an earlier checkpoint."
            ) from None
        if isinstance(exc, CheckpointLoadError):
            raise InspectError(str(exc)) from None
        raise InspectError(f"Could not read checkpoint {path!r}: {type(exc).__name__}: {exc}") from None


def _looks_like_torch_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        # a zip archive (torch >= 1.6, "PK" even when truncated) or a legacy pickle header
        return head == b"PK" or head[:1] == b"\x80"
    except OSError:
        return False


def _tensor_bytes(t: Any) -> int:
    return int(t.numel()) * int(t.element_size())


def _dtype_name(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-friendly data; tensors become a short description."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and value.dtype != torch.uint8:
            return value.item()
        return f"tensor(shape={list(value.shape)}, dtype={_dtype_name(value)})"
    if isinstance(value, dict):
        if depth > 4:
            return f"dict({len(value)} entries)"
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if depth > 4 or len(value) > 16:
            return f"{type(value).__name__}({len(value)} items)"
        return [_plain(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _weights(state: Any, max_keys: int) -> dict[str, Any]:
    import torch

    if not isinstance(state, dict):
        return {"error": f"state_dict is a {type(state).__name__}, not a dict"}
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    dtypes: dict[str, int] = {}
    for t in tensors.values():
        dtypes[_dtype_name(t)] = dtypes.get(_dtype_name(t), 0) + 1
    listed = list(tensors.items()) if max_keys < 0 else list(tensors.items())[:max_keys]
    return {
        "tensors": len(tensors),
        "parameters": sum(int(t.numel()) for t in tensors.values()),
        "dtypes": dtypes,
        "bytes": sum(_tensor_bytes(t) for t in tensors.values()),
        "other_entries": sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)),
        "keys": [{"name": k, "shape": list(t.shape), "dtype": _dtype_name(t)} for k, t in listed],
    }


def _optimizers(states: Any, classes: Any) -> list[dict[str, Any]]:
    out = []
    for i, state in enumerate(states if isinstance(states, list) else []):
        if not isinstance(state, dict):
            out.append({"index": i, "error": f"a {type(state).__name__}, not an optimizer state dict"})
            continue
        groups = state.get("param_groups", [])
        per_param = state.get("state", {})
        cls = classes[i] if isinstance(classes, list) and i < len(classes) else None
        out.append(
            {
                "index": i,
                "class": cls,
                "param_groups": [
                    {
                        "params": len(g.get("params", [])),
                        "hyperparameters": {str(k): _plain(v) for k, v in g.items() if k not in _GROUP_SKIP},
                    }
                    for g in groups
                    if isinstance(g, dict)
                ],
                "params_with_state": len(per_param) if isinstance(per_param, dict) else 0,
            }
        )
    return out


def _schedulers(states: Any) -> list[dict[str, Any]]:
    out = []
    for i, state in enumerate(states if isinstance(states, list) else []):
        if not isinstance(state, dict):
            out.append({"index": i, "error": f"a {type(state).__name__}, not a scheduler state dict"})
            continue
        shown = {k: _plain(state[k]) for k in _SCHEDULER_KEYS if k in state}
        out.append({"index": i, "state": shown, "keys": sorted(str(k) for k in state)})
    return out


def _position(loops: Any) -> dict[str, Any] | None:
    fit = loops.get("fit") if isinstance(loops, dict) else None
    if not isinstance(fit, dict):
        return None
    return {
        "epoch": fit.get("epoch"),
        "global_step": fit.get("global_step"),
        "phase": fit.get("phase"),
        "batches_done": fit.get("batches_done"),
        "val_pending": fit.get("val_pending"),
        "has_rng_state": "rng" in fit,
        "has_epoch_rng_state": "epoch_rng" in fit,
        "has_epoch_results": "results" in fit,
        "accumulated_grads": len(fit.get("accumulated_grads", {}) or {}),
        "callback_metrics": _plain(fit.get("callback_metrics", {})),
    }


_KNOWN = {
    "ember_version",
    "epoch",
    "global_step",
    "state_dict",
    "loops",
    "hyper_parameters",
    "datamodule_hyper_parameters",
    "optimizer_states",
    "optimizer_classes",
    "lr_schedulers",
    "precision",
    "callbacks",
    "datamodule",
}


def inspect_checkpoint(path: str, max_keys: int = 10) -> dict[str, Any]:
    """Everything ``ember checkpoint inspect`` shows, as plain data.

    Raises :class:`InspectError` (naming ``path``) when the file is missing,
    unreadable, refused by ``weights_only`` loading, or not an ember checkpoint.
    """
    from ember._version import __version__
    from ember.checkpointing import CheckpointError, check_compatible

    path = os.fspath(path)
    checkpoint = _load(path)
    if "state_dict" not in checkpoint:
        keys = ", ".join(map(str, list(checkpoint)[:8])) or "none"
        raise InspectError(
            f"{path!r} is not an ember checkpoint: it has no 'state_dict' (top-level keys: {keys}). "
            "Pass a file written by trainer.save_checkpoint or ModelCheckpoint."
        )
    stat = os.stat(path)
    notes = []
    try:
        check_compatible(checkpoint, path)
    except CheckpointError as exc:
        notes.append(str(exc))
    if "ember_version" not in checkpoint:
        notes.append("no 'ember_version': not written by ember (its weights may still load).")
    if "optimizer_states" not in checkpoint:
        notes.append("weights only (no optimizer state): Module.load_from_checkpoint works, resuming training does not.")
    callbacks = checkpoint.get("callbacks", {})
    return {
        "file": {
            "path": os.path.abspath(path),
            "size": stat.st_size,
            "modified": datetime.datetime.fromtimestamp(stat.st_mtime, tz=datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "ember_version": _plain(checkpoint.get("ember_version")),
        "reader_version": __version__,
        "epoch": _plain(checkpoint.get("epoch")),
        "global_step": _plain(checkpoint.get("global_step")),
        "fit_position": _position(checkpoint.get("loops")),
        "weights": _weights(checkpoint["state_dict"], max_keys),
        "optimizers": _optimizers(checkpoint.get("optimizer_states"), checkpoint.get("optimizer_classes")),
        "lr_schedulers": _schedulers(checkpoint.get("lr_schedulers")),
        "precision": _plain(checkpoint.get("precision")),
        "callbacks": {str(k): sorted(str(x) for x in v) if isinstance(v, dict) else _plain(v) for k, v in callbacks.items()}
        if isinstance(callbacks, dict)
        else _plain(callbacks),
        "hyper_parameters": _plain(checkpoint.get("hyper_parameters", {})),
        "datamodule_hyper_parameters": _plain(checkpoint.get("datamodule_hyper_parameters", {})),
        "datamodule": _plain(checkpoint.get("datamodule")),
        "other_keys": sorted(str(k) for k in checkpoint if k not in _KNOWN),
        "notes": notes,
    }


# --------------------------------------------------------------------------- text output


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _kv(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_kv(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return "[" + ", ".join(_kv(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_report(report: dict[str, Any]) -> str:
    f = report["file"]
    lines = [
        f"file:          {f['path']}",
        f"size:          {_size(f['size'])} ({f['size']} bytes), modified {f['modified']}",
        f"ember version: {report['ember_version'] or 'not recorded'} (reading with {report['reader_version']})",
        f"epoch:         {report['epoch']}    global_step: {report['global_step']}",
    ]
    pos = report["fit_position"]
    if pos is None:
        lines.append("fit position:  not recorded")
    else:
        extras = [name for name, flag in (("rng", pos["has_rng_state"]), ("epoch rng", pos["has_epoch_rng_state"])) if flag]
        if pos["has_epoch_results"]:
            extras.append("epoch's logged values")
        if pos["accumulated_grads"]:
            extras.append(f"{pos['accumulated_grads']} accumulated gradients")
        lines.append(
            f"fit position:  phase={pos['phase']} batches_done={pos['batches_done']} val_pending={pos['val_pending']}"
            + (f" (saved: {', '.join(extras)})" if extras else "")
        )
        if pos["callback_metrics"]:
            lines.append(f"metrics:       {_kv(pos['callback_metrics'])}")
    w = report["weights"]
    lines.append("")
    if "error" in w:
        lines.append(f"weights: {w['error']}")
    else:
        dtypes = ", ".join(f"{k} x{v}" for k, v in w["dtypes"].items()) or "-"
        lines.append(f"weights: {w['tensors']} tensors, {w['parameters']:,} values, {_size(w['bytes'])}; dtypes: {dtypes}")
        if w["keys"]:
            width = max(len(k["name"]) for k in w["keys"])
            for k in w["keys"]:
                shape = "x".join(map(str, k["shape"])) or "scalar"
                lines.append(f"  {k['name']:<{width}}  {shape:<16} {k['dtype']}")
            if len(w["keys"]) < w["tensors"]:
                lines.append(f"  ... {w['tensors'] - len(w['keys'])} more (--keys -1 lists all)")
    lines.append("")
    if report["optimizers"]:
        for opt in report["optimizers"]:
            if "error" in opt:
                lines.append(f"optimizer {opt['index']}: {opt['error']}")
                continue
            cls = opt["class"] or "class not recorded"
            lines.append(f"optimizer {opt['index']}: {cls}; state for {opt['params_with_state']} parameter(s)")
            for j, g in enumerate(opt["param_groups"]):
                lines.append(f"  group {j} ({g['params']} params): {_kv(g['hyperparameters'])}")
    else:
        lines.append("optimizers: none saved")
    if report["lr_schedulers"]:
        for s in report["lr_schedulers"]:
            lines.append(f"lr scheduler {s['index']}: {_kv(s.get('state', {})) if 'state' in s else s['error']}")
    else:
        lines.append("lr schedulers: none")
    if report["callbacks"]:
        lines.append("callbacks:")
        for key, state in report["callbacks"].items():
            lines.append(f"  {key}: {', '.join(state) if isinstance(state, list) else state}")
    else:
        lines.append("callbacks: no state")
    lines.append(f"hyperparameters: {_kv(report['hyper_parameters']) if report['hyper_parameters'] else 'none recorded'}")
    if report["datamodule_hyper_parameters"]:
        lines.append(f"datamodule hyperparameters: {_kv(report['datamodule_hyper_parameters'])}")
    if report["datamodule"] is not None:
        lines.append(f"datamodule state: {_kv(report['datamodule']) if report['datamodule'] else 'empty'}")
    if report["precision"]:
        lines.append(f"precision state: {_kv(report['precision'])}")
    if report["other_keys"]:
        lines.append(f"other keys: {', '.join(report['other_keys'])}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
