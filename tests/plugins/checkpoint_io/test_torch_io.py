"""``TorchCheckpointIO``: atomic writes and refusing files it cannot trust."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from ember.plugins.checkpoint_io.torch_io import CheckpointLoadError, TorchCheckpointIO


def _tmp_files(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".tmp-")]


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
