"""ember-ema as an installed distribution: its entry point, ``ember plugins``,
and a stack file that names the callback ``"ema"``."""

from __future__ import annotations

import json
import subprocess
import textwrap
from importlib.metadata import distribution, entry_points
from pathlib import Path

import ember_ema
import torch
from _ema_testing import ember_command
from ember_ema import EMA


def test_entry_point_is_installed() -> None:
    (ep,) = [ep for ep in entry_points(group="ember.plugins") if ep.name == "ema"]
    assert ep.value == "ember_ema.plugin"
    assert ep.dist is not None and ep.dist.metadata["Name"] == "ember-ema"
    assert distribution("ember-ema").version == ember_ema.__version__


def test_ember_plugins_lists_it(clean_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([*ember_command(), "plugins", "--json"], cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (entry,) = [p for p in report["plugins"] if p["distribution"] == "ember-ema"]
    assert entry["version"] == ember_ema.__version__
    assert entry["status"] == "loaded"
    assert entry["kind"] == "entrypoint"
    assert {"kind": "callback", "name": "ema"} in entry["roles"]


def test_registry_creates_it_by_name() -> None:
    from ember.plugin_manager import default_plugin_manager

    pm = default_plugin_manager()
    callback = pm.build_registry().create("callback", "ema", decay=0.5)
    assert isinstance(callback, EMA) and callback.decay == 0.5


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

[trainer]
max_epochs = 2
enable_progress_bar = false
default_root_dir = "runs"

[[callbacks]]
name = "ema"
init_args = { decay = 0.5, save_ema_state_dict = true }
"""


def test_stack_file_names_the_callback(clean_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "tiny_model.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "ember.toml").write_text(textwrap.dedent(STACK))
    proc = subprocess.run(
        [*ember_command(), "fit", "--config", "ember.toml"], cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checkpoints = sorted((tmp_path / "runs").rglob("*.ckpt"))
    assert checkpoints, f"no checkpoint written under {tmp_path / 'runs'}"
    checkpoint = torch.load(checkpoints[-1], weights_only=True)
    state = checkpoint["callbacks"]["EMA{decay=0.5}"]
    assert state["num_updates"] == checkpoint["global_step"] == 8
    assert set(checkpoint["ema_state_dict"]) == set(checkpoint["state_dict"]) == {"layer.weight", "layer.bias"}
    assert torch.equal(checkpoint["ema_state_dict"]["layer.weight"], state["ema"]["layer.weight"])
    assert not torch.equal(checkpoint["ema_state_dict"]["layer.weight"], checkpoint["state_dict"]["layer.weight"])
