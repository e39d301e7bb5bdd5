"""Two real training processes share one ``ModelCheckpoint`` directory and
save under the same names at the same moments: neither replaces the other's
files, and each one's ``best_model_path`` / ``last_model_path`` hold its own
weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import ember
    from ember.plugins.callbacks import ModelCheckpoint

    shared, run_id, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class Net(ember.Module):
        def __init__(self, run_id: int) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.body = torch.nn.Sequential(torch.nn.Linear(16, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.body(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(run_id)
    x = torch.randn(64, 16)
    loader = DataLoader(TensorDataset(x, x[:, :1]), batch_size=8)
    mc = ModelCheckpoint(dirpath=shared, every_n_train_steps=1, save_top_k=2, monitor="train_loss", save_last=True)
    trainer = ember.Trainer(default_root_dir=os.path.join(shared, f"root{run_id}"), max_steps=12, callbacks=[mc], logger=False,
                            enable_progress_bar=False, enable_model_summary=False, enable_fault_tolerance=False)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    trainer.fit(Net(run_id), loader)
    print(json.dumps({"best": mc.best_model_path, "last": mc.last_model_path, "kept": sorted(mc.best_k_models), "step": trainer.global_step}))
    """
)


@pytest.mark.slow
def test_two_concurrent_runs_never_overwrite_each_others_checkpoints(tmp_path: Path) -> None:
    shared = tmp_path / "ckpts"
    go = tmp_path / "go"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(shared), str(run_id), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for run_id in (1, 2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()  # type: ignore[union-attr]
        go.write_text("")  # both start training at the same moment
        outputs = [child.communicate(timeout=300) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    reports = {}
    for run_id, (child, (out, err)) in zip((1, 2), zip(children, outputs, strict=True), strict=True):
        assert child.returncode == 0, err
        reports[run_id] = json.loads(out.strip().splitlines()[-1])

    def owner(path: str) -> int:
        return torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]["run_id"]

    files = sorted(p.name for p in shared.glob("*.ckpt"))
    for run_id, report in reports.items():
        assert report["step"] == 12
        assert owner(report["best"]) == run_id, (run_id, report, files)
        assert owner(report["last"]) == run_id, (run_id, report, files)
        assert torch.load(report["last"], weights_only=True)["global_step"] == 12  # nobody wrote over it afterwards
        for path in report["kept"]:
            assert owner(path) == run_id
    mine = {run_id: {os.path.basename(p) for p in [r["last"], *r["kept"]]} for run_id, r in reports.items()}
    assert not mine[1] & mine[2]
    assert sorted(mine[1] | mine[2]) == files  # each run deleted only its own older files
    record = json.loads((shared / "ember_checkpoints.json").read_text())
    assert len(record["callbacks"]) == 1  # one callback configuration; the record names the run that saved last
    assert not [n for n in os.listdir(shared) if n.startswith(".")]
    print(f"\nconcurrent runs: {files}")
