"""Sharded (``torch.distributed.checkpoint``) directories are read without running
code from them: a planted ``.metadata`` or a planted non-tensor value would
create a marker file if it were unpickled; the marker must not appear, and the
load fails with one line naming the file and the refused object.

Fast tier: the checkpoints here are written by one process (``no_dist``); the
``fsdp`` resume of a planted directory with real processes is in test_fsdp.py.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import warnings
from typing import Any

import pytest
import torch

from ember.plugins.strategies import safe_dcp
from ember.plugins.strategies.fsdp_consolidate import consolidate
from ember.plugins.strategies.safe_dcp import UntrustedCheckpointError

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for any code an attacker wants run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _save(state: dict[str, Any], path: str) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process": it is
        dcp.save(state, checkpoint_id=path, no_dist=True)


def _state() -> dict[str, Any]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    layer(torch.randn(4, 3)).sum().backward()
    opt.step()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(layer), "optim": get_optimizer_state_dict(layer, opt)}


@pytest.fixture
def checkpoint(tmp_path: Any) -> str:
    """An ember-style sharded directory: DCP shards, .metadata and meta.pt."""
    path = str(tmp_path / "epoch=1.ckpt")
    _save(_state(), path)
    torch.save({"epoch": 1, "global_step": 4, "fsdp_sharded": {"world_size": 1, "with_optimizers": True}}, os.path.join(path, "meta.pt"))
    return path


def plant_metadata(path: str, marker: str) -> None:
    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump(Payload(marker), f)


def plant_value_in(path: str, marker: str, fqn: str = "optim.param_groups.0.lr") -> None:
    """Make the non-tensor value ``fqn`` of a written checkpoint the payload: appended
    to its shard file, with the metadata (itself genuine) pointing at it."""
    import dataclasses
    import io

    metadata = safe_dcp.read_metadata(path)
    index = next(k for k in metadata.storage_data if k.fqn == fqn)
    info = metadata.storage_data[index]
    data = io.BytesIO()
    torch.save(Payload(marker), data)
    with open(os.path.join(path, info.relative_path), "ab") as f:
        offset = f.seek(0, os.SEEK_END)
        f.write(data.getvalue())
    metadata.storage_data[index] = dataclasses.replace(info, offset=offset, length=len(data.getvalue()))
    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump(metadata, f)


def plant_value(path: str, marker: str) -> None:
    plant_value_in(path, marker)


def test_a_genuine_checkpoint_loads_in_full_and_into_a_state_dict(checkpoint: str) -> None:
    expected = _state()
    metadata = safe_dcp.read_metadata(checkpoint)
    assert "model.weight" in metadata.state_dict_metadata
    full = safe_dcp.load_full(checkpoint)
    torch.testing.assert_close(full["model"]["weight"], expected["model"]["weight"], atol=0, rtol=0)
    assert full["optim"]["param_groups"][0]["lr"] == 0.01
    target = {"model": {k: torch.zeros_like(v) for k, v in expected["model"].items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe_dcp.load(target, checkpoint, no_dist=True)
    torch.testing.assert_close(target["model"]["bias"], expected["model"]["bias"], atol=0, rtol=0)


@pytest.mark.parametrize("plant", [plant_metadata, plant_value], ids=["metadata", "non-tensor-value"])
def test_planted_payload_is_refused_by_every_reader(checkpoint: str, tmp_path: Any, plant: Any) -> None:
    marker = str(tmp_path / "PWNED")
    plant(checkpoint, marker)
    if plant is plant_metadata:
        with pytest.raises(UntrustedCheckpointError) as info:
            safe_dcp.read_metadata(checkpoint)
        assert "pathlib.Path.touch" in str(info.value) and ".metadata" in str(info.value)
    with pytest.raises(UntrustedCheckpointError) as info:
        safe_dcp.load_full(checkpoint)
    assert len(str(info.value).splitlines()) == 1 and checkpoint in str(info.value)
    target = {"optim": _state()["optim"]}
    with pytest.raises(UntrustedCheckpointError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe_dcp.load(target, checkpoint, no_dist=True)
    assert not os.path.exists(marker)


def test_consolidate_refuses_a_planted_checkpoint(checkpoint: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    marker = str(tmp_path / "PWNED")
    plant_metadata(checkpoint, marker)
    with pytest.raises(UntrustedCheckpointError):
        consolidate(checkpoint, str(tmp_path / "one.ckpt"))
    from ember.cli import main

    assert main(["checkpoint", "consolidate", checkpoint, str(tmp_path / "two.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "refused to unpickle pathlib.Path.touch" in err and len(err.splitlines()) == 1, err
    assert not os.path.exists(marker) and not os.path.exists(tmp_path / "one.ckpt") and not os.path.exists(tmp_path / "two.ckpt")


def test_plain_torch_reader_would_run_the_payload(checkpoint: str, tmp_path: Any) -> None:
    """The threat is real: PyTorch's own reader runs the planted .metadata."""
    marker = str(tmp_path / "PWNED")
    plant_metadata(checkpoint, marker)
    from torch.distributed.checkpoint import FileSystemReader

    with pytest.raises(Exception):  # noqa: B017 - whatever it raises after running the payload
        FileSystemReader(checkpoint).read_metadata()
    assert os.path.exists(marker)
