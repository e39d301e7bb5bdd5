"""``ckpt_path="best"`` and ``"last"`` in a trainer that did not train: they
resolve from the record ``ModelCheckpoint`` keeps beside its checkpoints, from
Python and from the ``ember`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.checkpointing import RECORD_FILE, MissingCheckpointError
from ember.plugins.callbacks import ModelCheckpoint
from ember.plugins.loggers import CSVLogger
from ember.testing import quiet_trainer as ember_quiet_trainer


def loader(n: int, batch_size: int, seed: int = 0) -> DataLoader:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def quiet_trainer(root: Path, **kwargs: Any) -> ember.Trainer:
    """ember.testing's, with no sanity check on the CPU and the Trainer's own epochs and fault tolerance."""
    defaults = {"num_sanity_val_steps": 0, "accelerator": "cpu", "max_epochs": None, "enable_fault_tolerance": None}
    return ember_quiet_trainer(root, **{**defaults, **kwargs})


class Scored(ember.Module):
    """Logs ``score`` from validation: 0.5, 0.2, 0.9 (epoch 1 is the best)."""

    SCORES = [0.5, 0.2, 0.9]

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("score", self.SCORES[self.current_epoch])

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _train(root: Path) -> ModelCheckpoint:
    mc = ModelCheckpoint(monitor="score", save_top_k=2, save_last=True)
    trainer = quiet_trainer(root, max_epochs=3, callbacks=[mc], enable_checkpointing=True, logger=CSVLogger(root))
    trainer.fit(Scored(), loader(32, 8), loader(16, 8, seed=1))
    return mc


def _fresh(root: Path, **kwargs: Any) -> ember.Trainer:
    return quiet_trainer(root, enable_checkpointing=True, logger=CSVLogger(root), **kwargs)


def test_best_and_last_resolve_in_a_fresh_trainer(tmp_path: Path) -> None:
    mc = _train(tmp_path)
    best, last = mc.best_model_path, mc.last_model_path
    assert os.path.basename(best) == "epoch=1-step=8.ckpt" and os.path.basename(last) == "last.ckpt"
    record = json.loads((Path(mc.dirpath) / RECORD_FILE).read_text())
    [entry] = record["callbacks"].values()
    assert entry["best_model_path"] == "epoch=1-step=8.ckpt" and entry["best_model_score"] == pytest.approx(0.2)
    assert entry["last_model_path"] == "last.ckpt" and entry["monitor"] == "score"

    for which, expected in (("best", best), ("last", last)):
        trainer = _fresh(tmp_path)  # knows nothing of the run but its default_root_dir
        model = Scored()
        trainer.test(model, loader(16, 8), ckpt_path=which, verbose=False)
        assert trainer._ckpt_path == expected
        saved = torch.load(expected, weights_only=True)["state_dict"]
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, saved[name])

    # a ModelCheckpoint with a dirpath of its own looks there, and only there
    configured = quiet_trainer(tmp_path / "elsewhere", callbacks=[ModelCheckpoint(dirpath=mc.dirpath, monitor="score")])
    configured.validate(Scored(), loader(16, 8), ckpt_path="best", verbose=False)
    assert configured._ckpt_path == best


def test_a_record_cannot_point_outside_its_directory(tmp_path: Path) -> None:
    mc = _train(tmp_path)
    outside = tmp_path / "outside.ckpt"
    outside.write_bytes(Path(mc.last_model_path).read_bytes())
    path = Path(mc.dirpath) / RECORD_FILE
    record = json.loads(path.read_text())
    for entry in record["callbacks"].values():
        entry["best_model_path"] = os.path.join("..", "..", "..", "outside.ckpt")
    path.write_text(json.dumps(record))
    with pytest.raises(MissingCheckpointError, match="no best checkpoint is recorded"):
        _fresh(tmp_path).test(Scored(), loader(16, 8), ckpt_path="best", verbose=False)


def test_no_record_is_one_line_naming_the_directory_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingCheckpointError) as error:
        _fresh(tmp_path).test(Scored(), loader(16, 8), ckpt_path="best", verbose=False)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "checkpoints") in message and RECORD_FILE in message and "pass the checkpoint file's path" in message
    with pytest.raises(MissingCheckpointError, match="no last checkpoint was found in .*dirpath=|no last checkpoint was found in"):
        quiet_trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck")]).test(Scored(), loader(16, 8), ckpt_path="last")
    assert isinstance(error.value, ValueError)  # as before: a bad value of ckpt_path


STACK = """
seed_everything = 1
[model]
class_path = "tinymodel:Tiny"
[data]
class_path = "tinymodel:TinyData"
[trainer]
max_epochs = 3
enable_progress_bar = false
enable_model_summary = false
[[callbacks]]
class_path = "ember.plugins.callbacks:ModelCheckpoint"
init_args = { monitor = "val_loss", save_top_k = 1, save_last = true }
"""

TINY = """
import torch
from torch.utils.data import DataLoader, TensorDataset
import ember

class Tiny(ember.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.layer(x), y))
        self.log("weight_sum", self.layer.weight.sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

class TinyData(ember.DataModule):
    def __init__(self):
        super().__init__()
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        self.ds = TensorDataset(x, x.sum(1, keepdim=True))

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=8)

    val_dataloader = test_dataloader = train_dataloader
"""


@pytest.mark.slow
def test_cli_test_with_ckpt_path_best_in_a_new_process(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "tinymodel.py").write_text(TINY)
    (tmp_path / "ember.toml").write_text(textwrap.dedent(STACK))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}

    def ember_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ember.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
        )

    proc = ember_cli("test", "--ckpt_path", "best")  # nothing trained yet
    assert proc.returncode != 0 and "no best checkpoint is recorded in" in proc.stderr, proc.stderr
    proc = ember_cli("fit")
    assert proc.returncode == 0, proc.stderr
    [record] = list(tmp_path.rglob(RECORD_FILE))
    [entry] = json.loads(record.read_text())["callbacks"].values()
    best = torch.load(record.parent / entry["best_model_path"], weights_only=True)["state_dict"]
    for which, weights in (("best", best), ("last", torch.load(record.parent / "last.ckpt", weights_only=True)["state_dict"])):
        proc = ember_cli("test", "--ckpt_path", which)
        assert proc.returncode == 0, proc.stderr
        shown = float(next(line.split()[-1] for line in proc.stdout.splitlines() if "weight_sum" in line))
        assert shown == pytest.approx(float(weights["layer.weight"].sum()), abs=1e-5), proc.stdout
