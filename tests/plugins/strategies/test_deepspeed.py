"""``deepspeed`` strategies with real processes on gloo (2 CPU processes).

DeepSpeed JIT-builds C++ ops on first use (its shared-memory comm op always,
~20-50 s on 2 cores); ``TORCH_EXTENSIONS_DIR`` points at one directory per
test session so that build happens once. The modules used by spawned workers
live at the top of this file: the spawn start method re-imports them by name.

Tolerance: ZeRO partitions the flat fp32 parameters and averages gradients with
a reduce-scatter instead of DDP's all-reduce, so the order of float additions
differs from one process on the global batch; weights agree to ``1e-5``.
A resumed run must end where an uninterrupted DeepSpeed run ends (``1e-6``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, regression_data  # noqa: E402
from strategy_helpers import Regressor as PlainRegressor
from torch.utils.data import DataLoader

import ember
from ember.plugins.strategies.deepspeed import DeepSpeedStrategy

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

TRAIN_TOL = 1e-5
RESUME_TOL = 1e-6


class Regressor(PlainRegressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class CPUAdamRegressor(Regressor):
    def configure_optimizers(self) -> Any:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(self.parameters(), lr=0.01)


class TorchAdamRegressor(Regressor):
    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.01)


class SaveAtEnd(ember.Callback):
    """Every rank takes part in writing the DeepSpeed checkpoint directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Any, module: Any) -> None:
        trainer.save_checkpoint(self.path)


@pytest.fixture(scope="session")
def extensions_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One build directory for the session's JIT-built ops (inherited by spawned workers)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: pip install 'ember[deepspeed]'")
    path = os.environ.get("TORCH_EXTENSIONS_DIR") or str(tmp_path_factory.mktemp("torch_extensions"))
    os.environ["TORCH_EXTENSIONS_DIR"] = path
    return path


@pytest.fixture
def ds_env(monkeypatch: pytest.MonkeyPatch, extensions_dir: str) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def plain_weights(epochs: int, global_batch: int, module_cls: type = Regressor, accumulate: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    module = module_cls()
    ember.Trainer(devices=1, max_epochs=epochs, accumulate_grad_batches=accumulate, **QUIET).fit(
        module, DataLoader(regression_data(), batch_size=global_batch)
    )
    return module.state_dict()


def deepspeed_fit(strategy: Any, epochs: int, module_cls: type = Regressor, **kwargs: Any) -> tuple[ember.Module, ember.Trainer]:
    torch.manual_seed(3)
    module = module_cls()
    trainer = ember.Trainer(strategy=strategy, devices=2, max_epochs=epochs, **{**QUIET, **kwargs.pop("trainer", {})})
    trainer.fit(module, DataLoader(regression_data(), batch_size=8), **kwargs)
    return module, trainer


def assert_weights_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float) -> None:
    assert set(got) == set(expected)
    for name, value in got.items():
        torch.testing.assert_close(value.float(), expected[name].float(), atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


# --------------------------------------------------------------------------- no deepspeed needed


@pytest.mark.slow
def test_importing_the_plugin_does_not_import_deepspeed() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import ember.plugins.strategies.deepspeed\n"
        "assert 'deepspeed' not in sys.modules, 'module import pulled deepspeed in'\n"
        "from ember.cli import main\n"
        "sys.argv = ['ember', 'plugins']\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "assert 'deepspeed' in out.getvalue(), out.getvalue()[:2000]\n"
        "assert 'deepspeed' not in sys.modules, 'ember plugins pulled deepspeed in'\n"
        "print('OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_registered_names_and_stages() -> None:
    trainer = ember.Trainer(strategy="deepspeed", devices=2, **QUIET)
    assert isinstance(trainer.strategy, DeepSpeedStrategy) and trainer.strategy.stage == 2
    for name, stage, offload in [
        ("deepspeed_stage_1", 1, False),
        ("deepspeed_stage_2", 2, False),
        ("deepspeed_stage_3", 3, False),
        ("deepspeed_stage_2_offload", 2, True),
    ]:
        s = ember.Trainer(strategy=name, devices=2, **QUIET).strategy
        assert (s.stage, s.offload_optimizer, s.world_size) == (stage, offload, 2)
        assert s.launcher.should_launch()
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        DeepSpeedStrategy(stage=4)


class _FakeTrainer:
    accumulate_grad_batches = 3
    gradient_clip_val = 0.5
    gradient_clip_algorithm = "norm"
    train_dataloader = _train_loader = DataLoader(regression_data(), batch_size=4)


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("32-true", {}),
        ("16-mixed", {"fp16": {"enabled": True}}),
        ("bf16-mixed", {"bf16": {"enabled": True}}),
        ("bf16-true", {"bf16": {"enabled": True}}),
    ],
)
def test_config_built_from_the_trainer(precision: str, expected: dict[str, Any]) -> None:
    strategy = ember.Trainer(strategy="deepspeed_stage_2_offload", devices=2, precision=precision, **QUIET).strategy
    config = strategy._build_config(_FakeTrainer())
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 4 * 3 * 2
    assert config["gradient_clipping"] == 0.5
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "nvme_path": "/local_nvme", "buffer_count": 4, "pin_memory": False}
    assert config["torch_adam"] is True and config["zero_force_ds_cpu_optimizer"] is False
    for key in ("fp16", "bf16"):
        assert {k: v for k, v in (config.get(key) or {}).items() if k == "enabled"} == expected.get(key, {})


def test_user_config_is_passed_through(tmp_path: Any) -> None:
    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 3}, "gradient_accumulation_steps": 3, "bf16": {"enabled": true}}')
    strategy = DeepSpeedStrategy(config=str(path), devices=2)
    config = strategy._build_config(_FakeTrainer())
    assert config["zero_optimization"] == {"stage": 3} and config["bf16"] == {"enabled": True}
    assert "torch_adam" not in config and "gradient_clipping" not in config  # taken as given
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["train_batch_size"] == 24
    assert strategy.zero_stage == 3


# --------------------------------------------------------------------------- real runs (2 processes, gloo)

_uninterrupted: dict[str, dict[str, torch.Tensor]] = {}


def uninterrupted(strategy: str) -> dict[str, torch.Tensor]:
    if strategy not in _uninterrupted:
        module, trainer = deepspeed_fit(strategy, epochs=2)
        assert trainer.global_step == 8 and trainer.state.status == "finished"
        _uninterrupted[strategy] = {k: v.clone() for k, v in module.state_dict().items()}
    return _uninterrupted[strategy]


@pytest.mark.slow
@pytest.mark.timeout(150)  # the first run of the session JIT-builds DeepSpeed's shm comm op
@pytest.mark.parametrize("strategy", ["deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"])
def test_two_processes_match_plain_training_on_the_global_batch(strategy: str, ds_env: None) -> None:
    expected = plain_weights(epochs=2, global_batch=16)
    got = uninterrupted(strategy)
    assert_weights_close(got, expected, TRAIN_TOL)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"])
def test_save_and_resume_continues_to_the_same_weights(strategy: str, ds_env: None, tmp_path: Any) -> None:
    ckpt = str(tmp_path / "ds-ckpt")
    _, first = deepspeed_fit(strategy, epochs=1, trainer={"callbacks": [SaveAtEnd(ckpt)]})
    assert first.global_step == 4
    # DeepSpeed's own layout: <dir>/ember/{mp_rank_00|zero_pp_rank_0_mp_rank_00}_model_states.pt, per-rank optimizer shards, 'latest'
    files = os.listdir(os.path.join(ckpt, "ember"))
    assert any(f.endswith("model_states.pt") for f in files) and sum("optim_states" in f for f in files) == 2, files
    assert open(os.path.join(ckpt, "latest")).read().strip() == "ember"

    module, resumed = deepspeed_fit(strategy, epochs=2, ckpt_path=ckpt)
    assert resumed.global_step == 8 and resumed.current_epoch == 2
    assert_weights_close(module.state_dict(), uninterrupted(strategy), RESUME_TOL)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_accumulation_and_clipping_match_plain_training(ds_env: None) -> None:
    """ember's loop owns the accumulation window; DeepSpeed clips by the global norm."""
    torch.manual_seed(3)
    expected_module = Regressor()
    ember.Trainer(devices=1, max_epochs=1, accumulate_grad_batches=2, gradient_clip_val=0.3, **QUIET).fit(
        expected_module, DataLoader(regression_data(), batch_size=16)
    )
    module, trainer = deepspeed_fit("deepspeed_stage_2", epochs=1, trainer={"accumulate_grad_batches": 2, "gradient_clip_val": 0.3})
    assert trainer.global_step == 2
    assert_weights_close(module.state_dict(), expected_module.state_dict(), TRAIN_TOL)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_offload_optimizer_stage_2_with_a_torch_optimizer(ds_env: None) -> None:
    """Offloaded optimizer state stepping the user's torch optimizer on the CPU: no CPUAdam build."""
    expected = plain_weights(epochs=2, global_batch=16, module_cls=TorchAdamRegressor)
    module, trainer = deepspeed_fit("deepspeed_stage_2_offload", epochs=2, module_cls=TorchAdamRegressor)
    assert trainer.global_step == 8
    assert_weights_close(module.state_dict(), expected, TRAIN_TOL)


@pytest.mark.slow  # JIT-builds DeepSpeed's CPUAdam on first use (~35-60 s on 2 cores); it runs, it is not skipped
@pytest.mark.timeout(240)
def test_offload_optimizer_stage_2_with_deepspeed_cpu_adam(ds_env: None) -> None:
    expected = plain_weights(epochs=2, global_batch=16, module_cls=TorchAdamRegressor)
    module, trainer = deepspeed_fit("deepspeed_stage_2_offload", epochs=2, module_cls=CPUAdamRegressor)
    assert trainer.global_step == 8
    assert_weights_close(module.state_dict(), expected, 1e-4)  # CPUAdam's vectorised update rounds differently


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bf16_mixed_trains_close_to_float32(ds_env: None) -> None:
    """bf16-mixed → DeepSpeed's ``bf16.enabled`` (bf16 weights in the module, fp32 master weights in ZeRO)."""
    expected = plain_weights(epochs=2, global_batch=16)
    module, trainer = deepspeed_fit("deepspeed_stage_2", epochs=2, trainer={"precision": "bf16-mixed"})
    assert trainer.global_step == 8 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert_weights_close(module.state_dict(), expected, 5e-2)  # bf16 forward/backward: ~3 significant digits


# --------------------------------------------------------------------------- planted checkpoints run nothing


def _plant(path: str, name: str, marker: str) -> None:
    """Replace ``<path>/ember/<name>`` by a file whose unpickling would create ``marker``."""
    from test_safe_dcp import Payload

    target = os.path.join(path, "ember", name)
    if name.endswith("model_states.pt"):
        states = torch.load(target, weights_only=True)
        states["ember"]["hyper_parameters"] = Payload(marker)  # in ember's own client state
    else:
        states = {"optimizer_state_dict": Payload(marker)}  # in a file only DeepSpeed reads
    torch.save(states, target)


def test_check_directory_refuses_a_planted_file_without_deepspeed(tmp_path: Any) -> None:
    from ember.plugins.strategies.deepspeed_checkpoint import check_directory, load_model_states
    from ember.plugins.strategies.safe_dcp import UntrustedCheckpointError

    path = str(tmp_path / "ds")
    os.makedirs(os.path.join(path, "ember"))
    model_file = os.path.join(path, "ember", "mp_rank_00_model_states.pt")
    torch.save({"module": {"w": torch.ones(2)}, "ember": {"epoch": 1, "global_step": 4}}, model_file)
    torch.save(
        {"optimizer_state_dict": {"state": {}, "param_groups": []}},
        os.path.join(path, "ember", "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
    )
    check_directory(path, "ember")
    assert load_model_states(model_file)["ember"]["global_step"] == 4
    marker = str(tmp_path / "PWNED")
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        torch.save({"module": {}, "ember": {"epoch": 1}}, model_file)
        _plant(path, name, marker)
        with pytest.raises(
            UntrustedCheckpointError, match=r"refused to load a DeepSpeed checkpoint file that names builtins\.getattr"
        ) as info:
            check_directory(path, "ember")
        assert name in str(info.value) and len(str(info.value).splitlines()) == 1
        os.remove(os.path.join(path, "ember", "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    _plant(path, "mp_rank_00_model_states.pt", marker)
    with pytest.raises(UntrustedCheckpointError, match="weights_only=True"):
        load_model_states(model_file)
    assert not os.path.exists(marker)


@pytest.fixture(scope="module")
def stage_2_checkpoint(tmp_path_factory: pytest.TempPathFactory, extensions_dir: str) -> str:
    path = str(tmp_path_factory.mktemp("ds") / "ds-ckpt")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
            mp.delenv(name, raising=False)
        deepspeed_fit("deepspeed_stage_2", epochs=1, trainer={"callbacks": [SaveAtEnd(path)]})
    return path


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("planted", ["mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"])
def test_resuming_a_planted_deepspeed_checkpoint_runs_nothing(stage_2_checkpoint: str, ds_env: None, tmp_path: Any, planted: str) -> None:
    import shutil

    from ember.plugins.strategies.ddp import DDPWorkerError

    path = str(tmp_path / "copy")
    shutil.copytree(stage_2_checkpoint, path)
    marker = str(tmp_path / "PWNED")
    _plant(path, planted, marker)
    with pytest.raises(DDPWorkerError) as info:
        deepspeed_fit("deepspeed_stage_2", epochs=2, ckpt_path=path)
    first_line = str(info.value).splitlines()[0]
    assert "UntrustedCheckpointError" in first_line and planted in first_line and "nothing from it was run" in first_line, first_line
    assert not os.path.exists(marker)
