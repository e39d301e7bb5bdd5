"""``fsdp`` (FSDP2) with real processes on gloo (2 CPU processes).

The modules used by spawned workers live at the top of this file: the spawn
start method re-imports them by name in each worker.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, ShardableNet, regression_data, run_torchrun  # noqa: E402
from torch.utils.data import DataLoader

import ember
from ember.plugins.strategies.fsdp import FSDPStrategy, is_sharded_checkpoint, optimizer_state_to_ids, optimizer_state_to_names

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


class Regressor(ShardableNet):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        # Calls a child directly and uses the root's own parameter: needs the root gathered.
        self.log("val_loss", torch.nn.functional.mse_loss(self.head(self.body(x)) * self.scale, y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.02)


def single_process_weights(epochs: int, global_batch: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    module = Regressor()
    ember.Trainer(devices=1, max_epochs=epochs, **QUIET).fit(module, DataLoader(regression_data(), batch_size=global_batch))
    return module.state_dict()


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert set(got) == set(expected)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], atol=atol, rtol=0, msg=name)


# --------------------------------------------------------------------------- spawn == one process on the global batch


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_processes_match_one_process_on_the_global_batch(no_launcher_env: None) -> None:
    expected = single_process_weights(epochs=2, global_batch=16)
    torch.manual_seed(3)
    module = Regressor()
    trainer = ember.Trainer(strategy="fsdp", devices=2, max_epochs=2, limit_val_batches=2, **QUIET)
    assert isinstance(trainer.strategy, FSDPStrategy) and trainer.strategy.launcher.should_launch()
    loader = DataLoader(regression_data(), batch_size=8)
    trainer.fit(module, loader, loader)
    assert_same(module.state_dict(), expected)
    assert trainer.global_step == 8  # 64 samples / 2 ranks / 8 per batch = 4 steps per epoch
    assert "val_loss" in trainer.callback_metrics
    assert trainer.state.status == "finished"


# --------------------------------------------------------------------------- checkpoints


class SaveAtEnd(ember.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Any, module: Any) -> None:
        trainer.save_checkpoint(self.path)
        assert trainer.strategy.state_dict_type == "full" or not trainer.strategy.async_save or trainer.strategy._save_future is not None


def fsdp_fit(epochs: int, callbacks: Any = (), ckpt_path: str | None = None, **strategy_kwargs: Any) -> tuple[Regressor, Any]:
    torch.manual_seed(3)
    module = Regressor()
    strategy = FSDPStrategy(devices=2, **strategy_kwargs)
    trainer = ember.Trainer(strategy=strategy, max_epochs=epochs, callbacks=list(callbacks), **QUIET)
    trainer.fit(module, DataLoader(regression_data(), batch_size=8), ckpt_path=ckpt_path)
    return module, trainer


@pytest.fixture(scope="module")
def module_launcher_env() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def uninterrupted(module_launcher_env: None) -> dict[str, torch.Tensor]:
    module, trainer = fsdp_fit(epochs=3)
    assert trainer.global_step == 12
    return module.state_dict()


@pytest.fixture(scope="module")
def one_epoch_sharded(tmp_path_factory: pytest.TempPathFactory, module_launcher_env: None) -> tuple[str, dict[str, torch.Tensor]]:
    """A sharded checkpoint after one epoch (sync save), and the weights it holds."""
    path = str(tmp_path_factory.mktemp("sharded") / "ckpts" / "epoch=1.ckpt")
    first, _ = fsdp_fit(epochs=1, callbacks=[SaveAtEnd(path)])
    return path, first.state_dict()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_sharded_save_then_resume_continues_exactly(
    tmp_path: Any, no_launcher_env: None, uninterrupted: Any, one_epoch_sharded: Any, async_save: bool
) -> None:
    if async_save:
        path = str(tmp_path / "ckpts" / "epoch=1.ckpt")
        fsdp_fit(epochs=1, callbacks=[SaveAtEnd(path)], async_save=True)
    else:
        path = one_epoch_sharded[0]
    assert is_sharded_checkpoint(path)
    names = sorted(os.listdir(path))
    assert "meta.pt" in names and ".metadata" in names and sum(n.endswith(".distcp") for n in names) == 2, names
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]  # published, nothing left behind
    meta = torch.load(os.path.join(path, "meta.pt"), weights_only=True)
    assert meta["global_step"] == 4 and "state_dict" not in meta and meta["fsdp_sharded"]["world_size"] == 2

    resumed, trainer = fsdp_fit(epochs=3, ckpt_path=path, async_save=async_save)
    assert trainer.global_step == 12
    assert_same(resumed.state_dict(), uninterrupted, atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore:The checkpoint was written by 2 process")
def test_full_checkpoint_is_one_ordinary_file_and_resumes_exactly(tmp_path: Any, no_launcher_env: None, uninterrupted: Any) -> None:
    path = str(tmp_path / "full.ckpt")
    first, _ = fsdp_fit(epochs=1, callbacks=[SaveAtEnd(path)], state_dict_type="full")
    assert os.path.isfile(path)
    checkpoint = torch.load(path, weights_only=True)
    assert_same(checkpoint["state_dict"], first.state_dict(), atol=0)
    # The optimizer state is in Optimizer.state_dict()'s own form: a plain Adam loads it.
    plain = Regressor()
    plain.load_state_dict(checkpoint["state_dict"])
    torch.optim.Adam(plain.parameters(), lr=0.02).load_state_dict(checkpoint["optimizer_states"][0])

    resumed, _ = fsdp_fit(epochs=3, ckpt_path=path, state_dict_type="full")
    assert_same(resumed.state_dict(), uninterrupted, atol=1e-6)
    # ... and so does one process without FSDP.
    torch.manual_seed(3)
    single = Regressor()
    ember.Trainer(devices=1, max_epochs=3, **QUIET).fit(single, DataLoader(regression_data(), batch_size=16), ckpt_path=path)
    assert_same(single.state_dict(), uninterrupted, atol=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_consolidate_gives_one_file_equal_to_the_sharded_state(
    tmp_path: Any, one_epoch_sharded: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from ember.plugins.strategies.fsdp_consolidate import consolidate

    path, first_state = one_epoch_sharded
    out = str(tmp_path / "single.ckpt")
    consolidate(path, out)
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["global_step"] == 4 and "fsdp_sharded" not in checkpoint
    plain = Regressor()
    plain.load_state_dict(checkpoint["state_dict"])
    assert_same(plain.state_dict(), first_state, atol=0)
    opt = torch.optim.Adam(plain.parameters(), lr=0.02)
    opt.load_state_dict(checkpoint["optimizer_states"][0])
    assert len(opt.state) == len(list(plain.parameters())) and float(opt.state[plain.scale]["step"]) == 4.0

    # Equal to the shards themselves, read back with torch.distributed.checkpoint in one process.
    import torch.distributed.checkpoint as dcp

    reference = {"model": {k: torch.empty_like(v) for k, v in plain.state_dict().items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to load in a single process": it is
        dcp.load(reference, checkpoint_id=path, no_dist=True)
    assert_same(checkpoint["state_dict"], reference["model"], atol=0)

    # The command line does the same.
    from ember.cli import main

    cli_out = tmp_path / "cli.ckpt"
    assert main(["checkpoint", "consolidate", path, str(cli_out)]) == 0
    assert "5 weight tensor(s), 1 optimizer state(s), epoch 1, step 4" in capsys.readouterr().out
    assert_same(torch.load(cli_out, weights_only=True)["state_dict"], checkpoint["state_dict"], atol=0)
    assert main(["checkpoint", "consolidate", str(tmp_path), str(tmp_path / "x.ckpt")]) == 2
    assert "not a complete sharded ember checkpoint" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("planted", [".metadata", "optimizer value"])
def test_resuming_a_planted_sharded_checkpoint_runs_nothing(
    tmp_path: Any, no_launcher_env: None, one_epoch_sharded: Any, planted: str
) -> None:
    """PyTorch's reader would unpickle the planted file and create the marker."""
    import shutil

    from test_safe_dcp import plant_metadata, plant_value_in

    from ember.plugins.strategies.ddp import DDPWorkerError

    path = str(tmp_path / "planted.ckpt")
    shutil.copytree(one_epoch_sharded[0], path)
    marker = str(tmp_path / "PWNED")
    if planted == ".metadata":
        plant_metadata(path, marker)
    else:
        plant_value_in(path, marker, fqn="optim.param_groups.0.lr")
    with pytest.raises(DDPWorkerError) as info:
        fsdp_fit(epochs=3, ckpt_path=path)
    first_line = str(info.value).splitlines()[0]
    assert "UntrustedCheckpointError" in first_line and path in first_line and "nothing from it was run" in first_line, first_line
    assert not os.path.exists(marker)


def test_optimizer_state_keys_round_trip() -> None:
    module = Regressor()
    opt = torch.optim.Adam([{"params": [module.scale]}, {"params": list(module.body.parameters()) + list(module.head.parameters())}])
    module(torch.randn(2, 4)).sum().backward()
    opt.step()
    plain = opt.state_dict()
    named = optimizer_state_to_names(plain, opt, module)
    assert named["param_groups"][0]["params"] == ["scale"] and "head.weight" in named["state"]
    back = optimizer_state_to_ids(named)
    assert back["param_groups"] == plain["param_groups"] and set(back["state"]) == set(plain["state"])


def test_registry_and_options(no_launcher_env: None) -> None:
    trainer = ember.Trainer(strategy="fsdp", devices=2, **QUIET)
    assert isinstance(trainer.strategy, FSDPStrategy) and trainer.strategy.state_dict_type == "sharded"
    with pytest.raises(ValueError, match="state_dict_type"):
        FSDPStrategy(devices=2, state_dict_type="local")
    with pytest.raises(ValueError, match="async_save"):
        FSDPStrategy(devices=2, state_dict_type="full", async_save=True)


# --------------------------------------------------------------------------- torchrun

TORCHRUN_SCRIPT = """
import sys
import torch
from torch.utils.data import DataLoader
import ember
sys.path.insert(0, {test_dir!r})
from test_fsdp import QUIET, Regressor, regression_data
from ember.plugins.strategies.fsdp import FSDPStrategy

torch.manual_seed(3)
module = Regressor()
trainer = ember.Trainer(strategy=FSDPStrategy(async_save=True), max_epochs=2, **QUIET)
assert not trainer.strategy.launcher.should_launch()
trainer.fit(module, DataLoader(regression_data(), batch_size=8))
assert trainer.world_size == 2 and trainer.strategy.environment.name == "torchelastic"
trainer.save_checkpoint({ckpt!r})  # written in the background; awaited at exit
full = trainer.strategy.full_state_dict(module)
if trainer.is_global_zero:
    torch.save(full, {out!r})
print("rank", trainer.global_rank, "done", trainer.global_step)
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_torchrun_trains_and_async_checkpoint_is_complete_at_exit(tmp_path: Any) -> None:
    import textwrap

    from ember.plugins.strategies.fsdp_consolidate import consolidate

    out, ckpt = str(tmp_path / "weights.pt"), str(tmp_path / "sharded")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT.format(test_dir=os.path.dirname(__file__), out=out, ckpt=ckpt)))
    proc = run_torchrun(script, tmp_path, timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 done 8" in proc.stdout and "rank 1 done 8" in proc.stdout
    expected = single_process_weights(epochs=2, global_batch=16)
    assert_same(torch.load(out, weights_only=True), expected)
    assert is_sharded_checkpoint(ckpt)
    assert_same(consolidate(ckpt, str(tmp_path / "one.ckpt"))["state_dict"], expected)
