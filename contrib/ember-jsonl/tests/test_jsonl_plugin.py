"""ember-jsonl as an installed distribution: its entry point, ``ember plugins``,
and a stack file that names the logger ``"jsonl"``."""

from __future__ import annotations

import json
import subprocess
import textwrap
from importlib.metadata import distribution, entry_points
from pathlib import Path

import ember_jsonl
from _jsonl_testing import ember_command
from ember_jsonl import JSONLinesLogger, read_run


def test_entry_point_is_installed() -> None:
    (ep,) = [ep for ep in entry_points(group="ember.plugins") if ep.name == "jsonl"]
    assert ep.value == "ember_jsonl.plugin"
    assert ep.dist is not None and ep.dist.metadata["Name"] == "ember-jsonl"
    assert distribution("ember-jsonl").version == ember_jsonl.__version__


def test_ember_plugins_lists_it(clean_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([*ember_command(), "plugins", "--json"], cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (entry,) = [p for p in report["plugins"] if p["distribution"] == "ember-jsonl"]
    assert entry["version"] == ember_jsonl.__version__
    assert entry["status"] == "loaded"
    assert entry["kind"] == "entrypoint"
    assert {"kind": "logger", "name": "jsonl"} in entry["roles"]


def test_registry_creates_it_by_name(tmp_path: Path) -> None:
    from ember.plugin_manager import default_plugin_manager

    pm = default_plugin_manager()
    logger = pm.build_registry().create("logger", "jsonl", save_dir=str(tmp_path), flush_every=5)
    assert isinstance(logger, JSONLinesLogger) and logger.save_dir == str(tmp_path)


MODEL = """
import torch
import ember
from torch.utils.data import DataLoader, TensorDataset


class Tiny(ember.Module):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 1)

    def _data(self, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(32, 3, generator=g)
        return TensorDataset(x, x.sum(dim=1, keepdim=True))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def train_dataloader(self):
        return DataLoader(self._data(0), batch_size=8)

    def val_dataloader(self):
        return DataLoader(self._data(1), batch_size=8)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
"""

STACK = """
seed_everything = 3

[model]
class_path = "tiny_model:Tiny"
init_args = { lr = 0.05 }

[trainer]
max_epochs = 2
log_every_n_steps = 2
enable_progress_bar = false
enable_checkpointing = false

[[loggers]]
name = "jsonl"
init_args = { save_dir = "logs", name = "stacked", flush_every = 3 }
"""


def test_stack_file_names_the_logger(clean_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "tiny_model.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "ember.toml").write_text(textwrap.dedent(STACK))
    proc = subprocess.run(
        [*ember_command(), "fit", "--config", "ember.toml"], cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "logs" / "stacked" / "version_0"
    records = read_run(run)
    # 4 steps per epoch logged every 2nd step, and one validation record per epoch
    assert [r["step"] for r in records if "loss" in r["metrics"]] == [2, 4, 6, 8]
    assert [r["step"] for r in records if "val_loss" in r["metrics"]] == [4, 8]
    assert json.loads((run / "hparams.json").read_text()) == {"lr": 0.05}
