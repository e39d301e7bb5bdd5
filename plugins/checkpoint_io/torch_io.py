"""Checkpoint files written with ``torch.save`` and read with
``torch.load(weights_only=True)``.

Writes are atomic: the checkpoint goes to a temporary file in the target
directory (named ``.ember-tmp-<host>-<pid>-<token>.partial``, never with a
checkpoint suffix, so no tool globbing ``*.ckpt`` picks up a half-written
file), is flushed to disk, and only then renamed over the destination, so a
crash at any moment leaves the previous file intact. The file gets the
process umask's permissions, as ``torch.save`` would give it.

Inside :func:`claiming_names` a save never replaces an existing file: the
temporary file is hard-linked to the destination (``os.link`` fails when the
name is taken) and, when another process got there first, to the next free
name; the name used is reported back. Temporary files that a killed process
left behind are removed by :func:`remove_stale_temp_files`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import pickle
import re
import secrets
import shutil
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ember.plugin_manager import hookimpl

TEMP_PREFIX = ".ember-tmp-"
TEMP_SUFFIX = ".partial"
_TEMP_NAME = re.compile(r"^\.ember-tmp-(?P<host>[A-Za-z0-9_]*)-(?P<pid>\d+)-[0-9a-f]+\.partial$")
# What earlier ember versions left behind (tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt")).
_LEGACY_TEMP_NAME = re.compile(r"^\.tmp-[a-z0-9_]{8}\.ckpt$")
#: A temporary file of another host (a shared file system) is stale only when older than this.
FOREIGN_TEMP_AGE_S = 24 * 3600
_DISK_FULL = {
    errno.ENOSPC: "",
    errno.EFBIG: "the process's file-size limit (ulimit -f) was reached",
    errno.EDQUOT: "the disk quota is exhausted",
}


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32]


def temp_name(directory: str) -> str:
    """A fresh temporary path in ``directory`` for a file being written."""
    return os.path.join(directory, f"{TEMP_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return bool(_TEMP_NAME.match(name) or _LEGACY_TEMP_NAME.match(name))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files of ember's own pattern in ``directory`` that
    no live process is writing: those of a dead process on this host, and
    those of another host (or of an earlier ember) older than a day. Other
    files are never touched. Returns the removed paths."""
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    now = time.time()
    for name in names:
        match = _TEMP_NAME.match(name)
        path = os.path.join(directory, name)
        if match is not None and match["host"] == _host():
            stale = int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"]))
        elif match is not None or _LEGACY_TEMP_NAME.match(name):
            try:
                stale = now - os.lstat(path).st_mtime > FOREIGN_TEMP_AGE_S
            except OSError:
                continue
        else:
            continue
        if stale and not os.path.isdir(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
    return removed


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, file-size limit, no
    permission); the previous file at that path is intact."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def write_error(exc: OSError, path: str) -> CheckpointWriteError:
    code = exc.errno or 0
    if code in _DISK_FULL:
        why = _DISK_FULL[code]
        text = f"no space left on device while writing {path} ([Errno {code}] {os.strerror(code)}{': ' + why if why else ''})"
        text += "; the previous file there, if any, is intact. Free space (or raise the limit) and save again."
    else:
        text = f"could not write checkpoint {path} ([Errno {code}] {exc.strerror or exc}); the previous file there, if any, is intact."
    error = CheckpointWriteError(text)
    error.errno, error.strerror, error.filename = code, os.strerror(code) if code else str(exc), path
    return error


class _RecordingWriter:
    """Passes writes to ``f`` and keeps the first ``OSError``: torch's zip
    writer swallows it into a message without the errno."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.f.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, tell, ... as the file has them
        return getattr(self.f, name)


@dataclass
class Claim:
    """See :func:`claiming_names`: a save to ``target`` claims its name;
    ``next_name(path)`` gives the name to try after ``path`` was taken;
    ``path`` is the name the save used."""

    target: str
    next_name: Callable[[str], str]
    path: str | None = None


_claim: contextvars.ContextVar[Claim | None] = contextvars.ContextVar("ember_checkpoint_claim", default=None)


@contextlib.contextmanager
def claiming_names(target: str, next_name: Callable[[str], str]) -> Iterator[Claim]:
    """A save to ``target`` made inside never replaces an existing file (see
    the module docstring). Other files written meanwhile (a sharded format's
    parts) are written as usual."""
    claim = Claim(os.path.abspath(target), next_name)
    token = _claim.set(claim)
    try:
        yield claim
    finally:
        _claim.reset(token)


def _link_to_free_name(tmp: str, path: str, claim: Claim) -> str:
    for _ in range(10_000):
        try:
            os.link(tmp, path)
            return path
        except FileExistsError:
            path = claim.next_name(path)
        except OSError as exc:  # no hard links here (some network or FUSE file systems)
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except FileExistsError:
                path = claim.next_name(path)
                continue
            os.replace(tmp, path)
            return path
    raise FileExistsError(errno.EEXIST, "no free checkpoint name", path)


class CheckpointLoadError(RuntimeError):
    """A checkpoint file could not be read; the message says why and what to do."""


class TorchCheckpointIO:
    name = "torch"

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, path) from None
        tmp = temp_name(directory)
        claim = _claim.get()
        if claim is not None and (claim.path is not None or os.path.abspath(path) != claim.target):
            claim = None
        writer = None
        try:
            # O_EXCL with 0o666: the process umask decides the mode, as with torch.save(path).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            with os.fdopen(fd, "wb") as f:
                writer = _RecordingWriter(f)
                torch.save(checkpoint, writer)
                f.flush()
                os.fsync(f.fileno())
            if claim is None:
                os.replace(tmp, path)
            else:
                claim.path = path = _link_to_free_name(tmp, path, claim)
                os.unlink(tmp)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            cause = writer.error if writer is not None and writer.error is not None else exc
            if isinstance(cause, OSError) and not isinstance(cause, FileExistsError):
                raise write_error(cause, path) from None
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
