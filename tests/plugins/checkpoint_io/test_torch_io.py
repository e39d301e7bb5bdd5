"""``TorchCheckpointIO``: atomic writes and refusing files it cannot trust."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ember.plugins.checkpoint_io.torch_io import (
    CheckpointLoadError,
    TorchCheckpointIO,
    claiming_names,
    is_temp_name,
    remove_stale_temp_files,
    temp_name,
)


def _tmp_files(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if is_temp_name(n) or n.startswith(".tmp")]


def test_round_trip_with_weights_only_types(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    ckpt = {"state_dict": {"w": torch.arange(3.0)}, "epoch": 2, "name": "x", "nested": [1, (2.5, None)], "flag": True}
    io.save_checkpoint(ckpt, str(tmp_path / "a.ckpt"))
    loaded = io.load_checkpoint(str(tmp_path / "a.ckpt"))
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert loaded["epoch"] == 2 and loaded["name"] == "x" and loaded["nested"] == [1, (2.5, None)] and loaded["flag"] is True
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["epoch"] == 2


def test_save_creates_directories_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    target = tmp_path / "deep" / "er" / "model.ckpt"
    io.save_checkpoint({"v": 1}, str(target))
    io.save_checkpoint({"v": 2}, str(target))
    assert io.load_checkpoint(str(target)) == {"v": 2}
    assert os.listdir(target.parent) == ["model.ckpt"]


def test_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    target = tmp_path / "model.ckpt"
    io.save_checkpoint({"v": 1}, str(target))
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a local function
        io.save_checkpoint({"v": 2, "bad": lambda: None}, str(target))
    assert target.read_bytes() == before
    assert _tmp_files(tmp_path) == []


def test_interrupted_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = TorchCheckpointIO()
    target = tmp_path / "model.ckpt"
    io.save_checkpoint({"v": 1}, str(target))

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"v": 2}, str(target))
    monkeypatch.undo()
    assert io.load_checkpoint(str(target)) == {"v": 1}
    assert _tmp_files(tmp_path) == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.ckpt.*does not exist"):
        TorchCheckpointIO().load_checkpoint(str(tmp_path / "absent.ckpt"))
    with pytest.raises(FileNotFoundError):
        TorchCheckpointIO().load_checkpoint(str(tmp_path))  # a directory is not a checkpoint file


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"PK\x03\x04 broken zip"])
def test_unreadable_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointLoadError, match="bad.ckpt"):
        TorchCheckpointIO().load_checkpoint(str(path))
    assert path.read_bytes() == content


def test_truncated_file(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    path = tmp_path / "t.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.randn(64, 64)}}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointLoadError, match="t.ckpt.*truncated"):
        io.load_checkpoint(str(path))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_payload_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointLoadError, match="Refused to load .*evil.ckpt.*not unpickled"):
        TorchCheckpointIO().load_checkpoint(str(path))
    assert not marker.exists()


def test_non_dict_payload(tmp_path: Path) -> None:
    path = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(2), path)
    with pytest.raises(CheckpointLoadError, match="tensor.ckpt.*holds a Tensor"):
        TorchCheckpointIO().load_checkpoint(str(path))


def test_remove_checkpoint_is_idempotent(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    path = tmp_path / "r.ckpt"
    io.save_checkpoint({"v": 1}, str(path))
    io.remove_checkpoint(str(path))
    io.remove_checkpoint(str(path))
    assert not path.exists()


def test_is_the_trainers_default(make_trainer: Any) -> None:
    assert isinstance(make_trainer().strategy.checkpoint_io, TorchCheckpointIO)


# --------------------------------------------------------------------------- file names, modes, claims, disk errors


def test_temp_name_never_ends_in_a_checkpoint_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The name a file has while it is being written: seen from inside torch.save."""
    seen: list[list[str]] = []
    real_save = torch.save

    def spying_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(os.listdir(tmp_path))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spying_save)
    TorchCheckpointIO().save_checkpoint({"v": 1}, str(tmp_path / "model.ckpt"))
    [[name]] = seen
    assert name.startswith(".ember-tmp-") and name.endswith(".partial") and ".ckpt" not in name, name
    assert is_temp_name(name)
    assert os.listdir(tmp_path) == ["model.ckpt"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_file_mode_follows_the_umask_like_torch_save(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        TorchCheckpointIO().save_checkpoint({"v": 1}, str(tmp_path / "ember.ckpt"))
        torch.save({"v": 1}, tmp_path / "torch.ckpt")
    finally:
        os.umask(old)
    mode = (tmp_path / "ember.ckpt").stat().st_mode & 0o777
    assert mode == (tmp_path / "torch.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temp_files_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(temp_name(str(tmp_path)).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    live = Path(temp_name(str(tmp_path)))  # this process: still writing, as far as anyone knows
    foreign_new = tmp_path / ".ember-tmp-otherhost-12-ab12cd34.partial"
    foreign_old = tmp_path / ".ember-tmp-otherhost-13-ab12cd35.partial"
    legacy_old = tmp_path / ".tmp-k2j4_x9a.ckpt"
    legacy_new = tmp_path / ".tmp-abcdefgh.ckpt"
    others = [tmp_path / "model.ckpt", tmp_path / ".tmp-mine.txt", tmp_path / "notes.partial"]
    for path in [stale, live, foreign_new, foreign_old, legacy_old, legacy_new, *others]:
        path.write_bytes(b"x")
    long_ago = time.time() - 3 * 24 * 3600
    for path in (foreign_old, legacy_old):
        os.utime(path, (long_ago, long_ago))
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(str(p) for p in (stale, foreign_old, legacy_old))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, foreign_new, legacy_new, *others))


def test_claiming_names_never_replaces_an_existing_file(tmp_path: Path) -> None:
    io = TorchCheckpointIO()
    target = tmp_path / "a.ckpt"
    io.save_checkpoint({"v": "theirs"}, str(target))
    with claiming_names(str(target), lambda p: p.replace(".ckpt", "-v1.ckpt") if "-v" not in p else p.replace("-v1", "-v2")) as claim:
        io.save_checkpoint({"v": "part"}, str(tmp_path / "sub" / "a.ckpt"))  # not the claimed name: written as usual
        io.save_checkpoint({"v": "mine"}, str(target))
    assert claim.path == str(tmp_path / "a-v1.ckpt")
    assert io.load_checkpoint(str(target)) == {"v": "theirs"}
    assert io.load_checkpoint(claim.path) == {"v": "mine"}
    assert sorted(os.listdir(tmp_path)) == ["a-v1.ckpt", "a.ckpt", "sub"] and io.load_checkpoint(str(tmp_path / "sub" / "a.ckpt")) == {
        "v": "part"
    }


FSIZE_CHILD = textwrap.dedent(
    """
    import os, resource, sys, torch
    from ember.plugins.checkpoint_io.torch_io import TorchCheckpointIO
    target = sys.argv[1]
    io = TorchCheckpointIO()
    io.save_checkpoint({"w": torch.zeros(1000)}, target)  # small: fits
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
    try:
        io.save_checkpoint({"w": torch.randn(1_000_000)}, target)  # 4 MB: does not
    except OSError as exc:
        print(type(exc).__name__, exc.errno, exc.filename, "|", exc, flush=True)
    """
)


@pytest.mark.slow
def test_file_size_limit_reports_the_path_and_errno_and_keeps_the_old_file(tmp_path: Path) -> None:
    """A real file-size limit (RLIMIT_FSIZE) in a child process: its writes
    fail with EFBIG, as a full disk fails them with ENOSPC."""
    target = tmp_path / "model.ckpt"
    proc = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    kind, code, filename, message = proc.stdout.split(" ", 3)
    assert kind == "CheckpointWriteError" and int(code) == errno.EFBIG and filename == str(target)
    assert message.startswith(f"| no space left on device while writing {target} ([Errno {errno.EFBIG}] File too large")
    assert "PytorchStreamWriter" not in message and "inline_container" not in message
    assert torch.load(target, weights_only=True)["w"].shape == (1000,)  # the earlier file is intact
    assert _tmp_files(tmp_path) == []


DISK_FULL_CHILD = textwrap.dedent(
    """
    import os, sys, torch
    from ember.plugins.checkpoint_io.torch_io import TorchCheckpointIO
    disk = sys.argv[1]
    target = os.path.join(disk, "model.ckpt")
    io = TorchCheckpointIO()
    io.save_checkpoint({"w": torch.zeros(1000)}, target)  # 4 KB: fits on the 1 MB disk
    try:
        io.save_checkpoint({"w": torch.randn(1_000_000)}, target)  # 4 MB: does not
    except OSError as exc:
        print(type(exc).__name__, exc.errno, exc.filename, "|", exc, flush=True)
    print("w", torch.load(target, weights_only=True)["w"].shape[0], "files", sorted(os.listdir(disk)), flush=True)
    """
)


@pytest.mark.slow
def test_a_full_disk_reports_the_path_and_errno_and_keeps_the_old_file(tmp_path: Path) -> None:
    """A real full disk: a 1 MB tmpfs mounted in a private mount namespace
    (needs root and ``unshare``; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a mount namespace here (unshare needs root)")
    script = tmp_path / "child.py"
    script.write_text(DISK_FULL_CHILD)
    command = f"mount -t tmpfs -o size=1m tmpfs {disk} && {sys.executable} {script} {disk}"
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    error_line, state_line = proc.stdout.strip().splitlines()
    kind, code, filename, message = error_line.split(" ", 3)
    target = disk / "model.ckpt"
    assert kind == "CheckpointWriteError" and int(code) == errno.ENOSPC and filename == str(target)
    assert message == (
        f"| no space left on device while writing {target} ([Errno {errno.ENOSPC}] No space left on device); "
        "the previous file there, if any, is intact. Free space (or raise the limit) and save again."
    )
    assert state_line == "w 1000 files ['model.ckpt']"  # the old file loads; the partial temporary file is gone
