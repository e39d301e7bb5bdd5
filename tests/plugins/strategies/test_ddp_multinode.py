"""``num_nodes``: two torchrun "nodes" (two launcher processes on this machine,
one worker each, meeting over loopback) train like one process on the
global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ember.plugins.strategies.ddp import find_free_port

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torch.utils.data import DataLoader, TensorDataset
    import ember

    class Reg(ember.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 1)
        def training_step(self, batch, i):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    if __name__ == "__main__":
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g)
        trainer = ember.Trainer(strategy="ddp", accelerator="cpu", devices=1, num_nodes=2, max_epochs=2, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        module = Reg()
        trainer.fit(module, DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4))
        print("RANK", trainer.global_rank, "NODE", trainer.strategy.node_rank, "WORLD", trainer.world_size, "STEP", trainer.global_step, flush=True)
        if trainer.is_global_zero:
            torch.save(module.state_dict(), sys.argv[1])
    """
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_nodes_match_one_process_on_the_global_batch(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    weights = tmp_path / "w.pt"
    port = str(find_free_port())
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "TORCHELASTIC", "SLURM"))
    }
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                str(script),
                str(weights),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=150)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "RANK 0 NODE 0 WORLD 2 STEP 8" in outputs[0]
    assert "RANK 1 NODE 1 WORLD 2 STEP 8" in outputs[1]

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    reference = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    # The distributed sampler gives node 0 samples 0, 2, 4, ... and node 1 samples 1, 3, 5, ...:
    # one global step averages the gradients of a batch of 4 from each, i.e. 8 consecutive samples.
    for _ in range(2):
        for start in range(0, 32, 8):
            xb = x[start : start + 8]
            opt.zero_grad()
            torch.nn.functional.mse_loss(reference(xb), xb.sum(1, keepdim=True)).backward()
            opt.step()
    saved = torch.load(weights, weights_only=True)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(saved[f"net.{name}"], value, atol=1e-6, rtol=1e-5)
