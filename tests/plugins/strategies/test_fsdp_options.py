"""FSDPStrategy's Lightning (FSDP1-style) keywords mapped onto FSDP2.

Fast tests check the mapping (no process group needed); the slow one trains
with two processes and checks, inside a worker, what was sharded and
checkpointed. Classes used by spawned workers live at the top of this file."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, regression_data
from torch.utils.data import DataLoader

import ember
from ember.plugins.strategies.fsdp import FSDPStrategy
from ember.plugins.strategies.fsdp_options import apply_activation_checkpointing, cast_buffers, fully_shard_kwargs, select, sharding

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.register_buffer("running", torch.zeros(8))
        self.forward_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return torch.tanh(self.linear(x))


class Net(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(4, 8)
        self.blocks = torch.nn.Sequential(Block(), Block())
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.inp(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Report(ember.Callback):
    """Written by rank zero inside the worker: what FSDP made of the module."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Any, module: Any) -> None:
        from torch.distributed.fsdp import FSDPModule

        if trainer.global_rank == 0:
            report = {
                "units": sorted(name for name, m in module.named_modules() if isinstance(m, FSDPModule)),
                "block_forward_calls": module.blocks[0].forward_calls,
                "steps": trainer.global_step,
                "reshard": trainer.strategy.shard_kwargs["reshard_after_forward"],
            }
            with open(self.path, "w") as f:
                json.dump(report, f)


def test_cpu_offload_and_mixed_precision_map_to_fsdp2_policies() -> None:
    from torch.distributed.fsdp import CPUOffload, CPUOffloadPolicy, MixedPrecision, MixedPrecisionPolicy

    assert isinstance(fully_shard_kwargs(True, None, True)["offload_policy"], CPUOffloadPolicy)
    assert isinstance(fully_shard_kwargs(CPUOffload(offload_params=True), None, True)["offload_policy"], CPUOffloadPolicy)
    assert "offload_policy" not in fully_shard_kwargs(CPUOffload(offload_params=False), None, True)
    assert "offload_policy" not in fully_shard_kwargs(None, None, True)
    mp = fully_shard_kwargs(None, MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32), True)["mp_policy"]
    assert (mp.param_dtype, mp.reduce_dtype, mp.cast_forward_inputs) == (torch.bfloat16, torch.float32, False)
    policy = MixedPrecisionPolicy(param_dtype=torch.float16)
    assert fully_shard_kwargs(None, policy, False) == {"reshard_after_forward": False, "mp_policy": policy}


def test_sharding_strategy() -> None:
    from torch.distributed.fsdp import ShardingStrategy

    assert sharding("FULL_SHARD") == (True, False)
    assert sharding(ShardingStrategy.SHARD_GRAD_OP) == (False, False)
    assert sharding("HYBRID_SHARD") == (True, True)
    with pytest.raises(ValueError, match="use strategy='ddp'"):
        FSDPStrategy(devices=2, sharding_strategy="NO_SHARD")
    assert FSDPStrategy(devices=2, sharding_strategy="SHARD_GRAD_OP").shard_kwargs["reshard_after_forward"] is False


def test_wrap_policies_pick_submodules() -> None:
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy, size_based_auto_wrap_policy

    net = Net()
    blocks = [net.blocks[0], net.blocks[1]]
    assert select(net, None) is None
    assert select(net, {Block}) == blocks
    assert select(net, [Block]) == blocks
    assert select(net, ModuleWrapPolicy({Block})) == blocks
    # FSDP1's size policy: modules holding at least min_num_params parameters (the Linear layers of 72 parameters)
    picked = select(
        net, lambda module, recurse, nonwrapped_numel: size_based_auto_wrap_policy(module, recurse, nonwrapped_numel, min_num_params=50)
    )
    assert net.blocks[0].linear in picked and net.inp not in picked


def test_activation_checkpointing_recomputes_the_forward() -> None:
    net = Net()
    x = torch.randn(5, 4)
    net(x).sum().backward()
    assert net.blocks[0].forward_calls == 1
    picked = apply_activation_checkpointing(net, Block, None)
    assert picked == [net.blocks[0], net.blocks[1]]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net(x).sum().backward()
    assert net.blocks[0].forward_calls == 3  # the forward, and again in the backward
    assert set(net.state_dict()) == set(before)  # parameter names unchanged


def test_buffer_dtype_casts_buffers() -> None:
    from torch.distributed.fsdp import MixedPrecision

    net = Net()
    cast_buffers(net, MixedPrecision(buffer_dtype=torch.float64))
    assert net.blocks[0].running.dtype == torch.float64 and net.inp.weight.dtype == torch.float32


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_lightning_options_train_two_processes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.distributed.fsdp import CPUOffload
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    path = str(tmp_path / "report.json")
    strategy = FSDPStrategy(
        devices=2,
        auto_wrap_policy=ModuleWrapPolicy({Block}),
        activation_checkpointing=[Block],
        sharding_strategy="SHARD_GRAD_OP",
        cpu_offload=CPUOffload(offload_params=True),
        device_mesh=(1, 2),
        state_dict_type="full",
    )
    torch.manual_seed(0)
    module = Net()
    trainer = ember.Trainer(strategy=strategy, max_steps=3, callbacks=[Report(path)], **QUIET)
    trainer.fit(module, DataLoader(regression_data(), batch_size=8))
    with open(path) as f:
        report = json.load(f)
    assert report["units"] == ["", "blocks.0", "blocks.1"]
    assert report["block_forward_calls"] == 6  # 3 steps, each forward recomputed in the backward
    assert report["steps"] == 3 and report["reshard"] is False
