"""``ember fit | validate | test | predict``: load and check the stack, check
``--ckpt_path``, build, run, print the metrics.

Every mistake ember can see before training starts is found before anything
is created or written. An error that ember's own code raises while building
or running the stack is one message naming the stack file and key; an error
in the user's code keeps its traceback (see :mod:`ember.commands.errors`)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from ember.commands.errors import code_error, is_user_error, one_line, user_error
from ember.errors import UserError


def check_ckpt_path(value: str | None) -> None:
    """Refuse a ``--ckpt_path`` that is missing, a directory that holds no
    checkpoint, or a file that is not a checkpoint, before anything is built.
    ``best`` and ``last`` are resolved by the Trainer."""
    if value is None or value in ("best", "last"):
        return
    path = Path(value).expanduser()
    flag = f"--ckpt_path {value}"
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        siblings = sorted(p.name for p in parent.iterdir() if p.suffix == ".ckpt") if parent.is_dir() else []
        from ember.suggest import closest

        match = closest(path.name, siblings)
        hint = (
            f" Did you mean {str(parent / match)!r}?"
            if match
            else (f" Checkpoints in {parent}: {', '.join(siblings[:5])}." if siblings else "")
        )
        raise UserError(
            f"{flag}: no such file.{hint} Pass a checkpoint written by ModelCheckpoint or trainer.save_checkpoint, "
            "or --ckpt_path last / best."
        )
    if path.is_dir():
        if _checkpoint_directory(path):
            return  # a sharded (fsdp) or DeepSpeed checkpoint: its strategy reads it
        inside = sorted(p.name for p in path.iterdir() if p.suffix == ".ckpt")
        found = f"; it holds {', '.join(inside[:5])}: pass one of those" if inside else "; pass a checkpoint file"
        raise UserError(
            f"{flag}: is a directory, not a checkpoint{found} (e.g. --ckpt_path {path / (inside[0] if inside else 'last.ckpt')})."
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError as exc:
        raise UserError(f"{flag}: cannot read it: {exc.strerror or exc}.") from None
    if not head:
        raise UserError(f"{flag}: the file is empty (0 bytes): its write never finished. Use an earlier checkpoint, e.g. --ckpt_path last.")
    if head != b"PK" and head[:1] != b"\x80":
        raise UserError(
            f"{flag}: is not a checkpoint (neither a torch zip archive nor a pickle; it starts with {head!r}). "
            "Pass a .ckpt file written by ModelCheckpoint or trainer.save_checkpoint."
        )


def _checkpoint_directory(path: Path) -> bool:
    """A directory a strategy writes as one checkpoint: fsdp's sharded format
    (``meta.pt``) or DeepSpeed's (``latest`` and tag folders of model states)."""
    if (path / "meta.pt").is_file() or (path / "latest").is_file():
        return True
    return any(child.is_dir() and any(child.glob("*model_states.pt")) for child in path.iterdir())


def _trainer_where(stack: Any, text: str) -> str:
    """``ember.toml: trainer.max_epochs`` for the ``[trainer]`` key an error
    message names, else the stack file."""
    from ember.stack.build import where_is

    for key in sorted(stack.trainer, key=len, reverse=True):
        if re.search(rf"\b{re.escape(key)}\b", text):
            return where_is(stack, f"trainer.{key}")
    return f"{stack.source.name if stack.source else 'the stack'}: trainer"


def run(args: argparse.Namespace, overrides: list[str], show_traceback: bool) -> int:
    from ember.stack import StackError, build, check_stack, default_registry, load_stack

    environ = dict(os.environ)
    from ember.commands.registry import plugin_stack_keys

    stack = load_stack(args.config, Path.cwd(), overrides, environ, check=False, require_model=True, stack_keys=plugin_stack_keys())
    stack.check_required_plugins()
    from ember.plugin_names import check_stack_plugin_names

    check_stack_plugin_names(stack, environ)
    needs_registry = any(c.name is not None for c in [*stack.callbacks, *stack.loggers])
    registry = default_registry(stack, environ) if needs_registry else None
    check_stack(stack, registry=registry, environ=environ)
    check_ckpt_path(args.ckpt_path)

    import ember

    if stack.seed_everything is not None:
        ember.seed_everything(stack.seed_everything)
    try:
        module, datamodule, trainer_kwargs = build(stack, registry, environ)
    except StackError:
        raise
    except Exception as exc:  # the user's __init__ raised: show where
        return code_error(exc, "creating the stack's model, data module, callbacks or loggers failed")
    try:
        trainer = ember.Trainer(**trainer_kwargs)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        text = one_line(exc).rstrip(".")
        return user_error(f"{_trainer_where(stack, text)}: ember.Trainer rejected it: {text}.", exc, show_traceback)

    command = args.command
    try:
        if command == "fit":
            trainer.fit(module, datamodule=datamodule, ckpt_path=args.ckpt_path)
        elif command == "validate":
            trainer.validate(module, datamodule=datamodule, ckpt_path=args.ckpt_path, verbose=False)  # the table below shows the metrics
        elif command == "test":
            trainer.test(module, datamodule=datamodule, ckpt_path=args.ckpt_path, verbose=False)  # the table below shows the metrics
        else:
            predictions = trainer.predict(module, datamodule=datamodule, ckpt_path=args.ckpt_path)
            if args.output:
                import torch

                out = Path(args.output)
                if out.parent and not out.parent.exists():
                    out.parent.mkdir(parents=True, exist_ok=True)
                torch.save(predictions, out)
                count = len(predictions) if isinstance(predictions, list) else 1
                print(f"saved {count} prediction batch{'es' if count != 1 else ''} to {out}")
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if is_user_error(exc):
            where = f" ({stack.source.name})" if stack.source else ""
            return user_error(f"`ember {command}`{where} stopped: {one_line(exc)}", exc, show_traceback)
        return code_error(exc, f"`ember {command}` failed")
    print_metrics(trainer.callback_metrics)
    return 0


def _to_float(value: Any) -> float | None:
    try:
        if hasattr(value, "numel"):
            if value.numel() != 1:
                return None
            return float(value.detach().cpu().item())
        return float(value)
    except (TypeError, ValueError):
        return None


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = [(str(k), _to_float(v)) for k, v in sorted(metrics.items())]
    rows = [(k, v) for k, v in rows if v is not None]
    if not rows:
        return ""
    width = max(len("metric"), *(len(k) for k, _ in rows))
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{k:<{width}}  {v:.6g}" for k, v in rows]
    return "\n".join(lines)


def print_metrics(metrics: dict[str, Any]) -> None:
    table = metrics_table(metrics)
    if table:
        print(table)


__all__ = ["check_ckpt_path", "metrics_table", "print_metrics", "run"]
