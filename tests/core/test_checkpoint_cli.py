"""``ember checkpoint inspect``: real checkpoints from a real fit, the text and
``--json`` output, and every error path (exit status 2, ``error: ...`` naming
the file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import cli
from ember.plugins.callbacks.model_checkpoint import ModelCheckpoint


class _Net(ember.Module):
    def __init__(self, hidden: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.body(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)}


class _Data(ember.DataModule):
    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.loaded_at = 0

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(24, 4, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=self.hparams.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"loaded_at": 7}


class _SaveMidEpoch(ember.Callback):
    """Saves a full checkpoint in the middle of the first epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 3:
            trainer.save_checkpoint(self.path)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect")
    ember.seed_everything(0)
    trainer = ember.Trainer(
        max_epochs=2,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpts", save_last=True), _SaveMidEpoch(root / "mid.ckpt")],
    )
    trainer.fit(_Net(hidden=8), datamodule=_Data(batch_size=4))
    trainer.save_checkpoint(root / "weights.ckpt", weights_only=True)
    return {"last": root / "ckpts" / "last.ckpt", "mid": root / "mid.ckpt", "weights": root / "weights.ckpt", "root": root}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_inspect_text_shows_provenance_and_contents(fitted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["checkpoint", "inspect", str(fitted["mid"])], capsys)
    assert rc == 0, err
    assert f"ember version: {ember.__version__}" in out
    assert "global_step: 3" in out
    assert "phase=batches batches_done=3 val_pending=False" in out
    assert "body.0.weight" in out and "8x4" in out
    assert "weights: 4 tensors, 49 values" in out
    assert "lr=0.05" in out and "momentum=0.9" in out  # param group hyperparameters
    assert "class not recorded" in out
    assert "step_size=2" in out  # the StepLR state
    assert "hyperparameters: hidden=8, lr=0.05" in out
    assert "datamodule hyperparameters: batch_size=4" in out
    assert "datamodule state: loaded_at=7" in out
    assert "ModelCheckpoint" in out and "best_model_path" in out
    assert f"({fitted['mid'].stat().st_size} bytes)" in out


def test_inspect_json(fitted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["checkpoint", "inspect", str(fitted["last"]), "--json", "--keys", "2"], capsys)
    assert rc == 0, err
    report = json.loads(out)
    saved = torch.load(fitted["last"], weights_only=True)
    assert report["ember_version"] == ember.__version__
    assert report["epoch"] == saved["epoch"] and report["global_step"] == saved["global_step"] == 12
    pos = report["fit_position"]
    assert {k: pos[k] for k in ("phase", "batches_done", "val_pending")} == {
        k: saved["loops"]["fit"][k] for k in ("phase", "batches_done", "val_pending")
    }
    assert pos["has_rng_state"] is True
    w = report["weights"]
    assert w["tensors"] == len(saved["state_dict"]) == 4
    assert w["parameters"] == sum(t.numel() for t in saved["state_dict"].values()) == 49
    assert w["dtypes"] == {"float32": 4}
    assert w["bytes"] == 49 * 4
    assert [k["name"] for k in w["keys"]] == ["body.0.weight", "body.0.bias"]
    assert w["keys"][0]["shape"] == [8, 4]
    [opt] = report["optimizers"]
    assert opt["param_groups"][0]["params"] == 4
    assert opt["param_groups"][0]["hyperparameters"]["momentum"] == 0.9
    assert opt["params_with_state"] == 4  # momentum buffers
    [sched] = report["lr_schedulers"]
    assert sched["state"]["last_epoch"] == saved["lr_schedulers"][0]["last_epoch"]
    assert any(key.startswith("ModelCheckpoint") for key in report["callbacks"])
    assert report["hyper_parameters"] == {"hidden": 8, "lr": 0.05}
    assert report["datamodule"] == {"loaded_at": 7}
    assert report["file"]["size"] == fitted["last"].stat().st_size
    assert report["file"]["path"] == str(fitted["last"].resolve())
    assert report["notes"] == []


def test_inspect_weights_only_checkpoint(fitted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["checkpoint", "inspect", str(fitted["weights"]), "--json"], capsys)
    assert rc == 0
    report = json.loads(out)
    assert report["optimizers"] == [] and report["lr_schedulers"] == []
    assert any("weights only" in note for note in report["notes"])


def _assert_error(rc: int, out: str, err: str, path: Path, *parts: str) -> None:
    assert rc == 2
    assert out == ""
    assert err.startswith("error: ")
    assert str(path) in err
    for part in parts:
        assert part in err, err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.ckpt"
    _assert_error(*_run(["checkpoint", "inspect", str(path)], capsys), path, "does not exist")


def test_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_error(*_run(["checkpoint", "inspect", str(tmp_path)], capsys), tmp_path, "is a directory")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file(fitted: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], keep: float) -> None:
    data = fitted["last"].read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_error(*_run(["checkpoint", "inspect", str(path), "--json"], capsys), path, "truncated", "earlier checkpoint")


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    _assert_error(*_run(["checkpoint", "inspect", str(path)], capsys), path, "is empty")


def test_corrupt_bytes(fitted: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(fitted["last"].read_bytes())
    data[:64] = bytes(range(1, 65))  # wipes the zip header
    path = tmp_path / "garbled.ckpt"
    path.write_bytes(bytes(data))
    _assert_error(*_run(["checkpoint", "inspect", str(path)], capsys), path, "Could not read checkpoint", "corrupted")


def test_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.ckpt"
    for text in ("not a checkpoint\n", "hello"):
        path.write_text(text)
        _assert_error(
            *_run(["checkpoint", "inspect", str(path)], capsys), path, "Could not read checkpoint", "corrupted or in some other format"
        )


def test_torch_file_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    _assert_error(*_run(["checkpoint", "inspect", str(listed)], capsys), listed, "holds a list, not an ember checkpoint")
    plain = tmp_path / "dict.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    _assert_error(*_run(["checkpoint", "inspect", str(plain)], capsys), plain, "is not an ember checkpoint", "'state_dict'", "weights")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "ember_version": ember.__version__, "payload": _Payload(marker)}, path)
    assert not marker.exists()
    _assert_error(*_run(["checkpoint", "inspect", str(path)], capsys), path, "Refused to load", "not unpickled")
    assert not marker.exists()


def test_incompatible_version_is_shown_with_a_note(fitted: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = torch.load(fitted["last"], weights_only=True)
    checkpoint["ember_version"] = "99.0.0"
    path = tmp_path / "future.ckpt"
    torch.save(checkpoint, path)
    rc, out, _ = _run(["checkpoint", "inspect", str(path)], capsys)
    assert rc == 0  # inspecting is how one finds out which ember wrote it
    assert "ember version: 99.0.0" in out
    assert "note:" in out and "cannot restore" in out


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["checkpoint"], capsys)
    assert rc == 2 and "inspect" in err
    rc, _, err = _run(["checkpoint", "inspect"], capsys)
    assert rc == 2 and "PATH" in err


def test_console_script_without_torch_for_help(tmp_path: Path) -> None:
    """``ember checkpoint --help`` is parsed before any heavy import."""
    code = (
        "import sys, contextlib, io\nimport ember.cli\nbuf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n    rc = ember.cli.main(['checkpoint', 'inspect', '--help'])\n"
        "print(rc, 'torch' in sys.modules, 'inspect' in buf.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.stdout.split() == ["0", "False", "True"], proc.stderr
