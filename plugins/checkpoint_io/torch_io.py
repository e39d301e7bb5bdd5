"""Checkpoint files written with ``torch.save`` and read with
``torch.load(weights_only=True)``.

Writes are atomic: the checkpoint goes to a temporary file in the target
directory, is flushed to disk, and only then renamed over the destination, so
a crash at any moment leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from typing import Any

import torch

from ember.plugin_manager import hookimpl


class CheckpointLoadError(RuntimeError):
    """A checkpoint file could not be read; the message says why and what to do."""


class TorchCheckpointIO:
    name = "torch"

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint {path!r} does not exist. Check the path, or pass ckpt_path='last' / 'best'.")
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"PK" and not zipfile.is_zipfile(path):
            raise CheckpointLoadError(
                f"Could not read checkpoint {path!r}: the file is truncated, corrupted or not a torch checkpoint "
                "(its zip directory is missing, as when a crash or an interrupted copy cuts a file short). "
                "Use an earlier checkpoint, e.g. ckpt_path='last'."
            )
        if head[:2] != b"PK" and head[:1] != b"\x80":
            raise CheckpointLoadError(
                f"{path!r} is not a checkpoint: it is neither a torch zip archive nor a pickle (it starts with {head!r}). "
                "Pass a file written by trainer.save_checkpoint or ModelCheckpoint."
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointLoadError(
                f"Refused to load {path!r}: it contains objects outside the types ember allows "
                f"(tensors, numbers, strings and containers of them), so it was not unpickled. "
                f"Only load checkpoints you trust with other tools. Detail: {str(exc).splitlines()[0]}"
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
            raise CheckpointLoadError(
                f"Could not read checkpoint {path!r}: the file is truncated, corrupted or not a torch checkpoint "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Use an earlier checkpoint, e.g. ckpt_path='last'."
            ) from None
        if not isinstance(checkpoint, dict):
            raise CheckpointLoadError(f"{path!r} holds a {type(checkpoint).__name__}, not an ember checkpoint dictionary.")
        return checkpoint

    def remove_checkpoint(self, path: str) -> None:
        """Remove a checkpoint file, or a checkpoint directory (sharded formats)."""
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; not supported everywhere, and optional.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("checkpoint_io", "torch", TorchCheckpointIO)
