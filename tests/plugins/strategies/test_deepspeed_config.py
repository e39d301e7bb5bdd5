"""DeepSpeedStrategy's flat (Lightning-named) keywords land in the DeepSpeed
config it builds. The fast tests build configs without DeepSpeed; the slow
ones run DeepSpeed itself (its logger, activation checkpointing, a checkpoint
written with ``exclude_frozen_parameters``)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, Regressor, regression_data
from torch.utils.data import DataLoader

import ember
from ember.plugins.strategies.deepspeed import OPTIMIZER_MARKER, DeepSpeedStrategy
from ember.plugins.strategies.deepspeed_config import OPTION_DEFAULTS


class FrozenFirst(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.net[0].requires_grad_(False)


class SaveAtEnd(ember.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Any, module: Any) -> None:
        trainer.save_checkpoint(self.path)


class _Trainer:
    accumulate_grad_batches = 1
    gradient_clip_val = None
    gradient_clip_algorithm = "norm"
    train_dataloader = _train_loader = DataLoader(regression_data(), batch_size=4)


def build(precision: str = "32-true", **kwargs: Any) -> dict[str, Any]:
    strategy = ember.Trainer(strategy=DeepSpeedStrategy(devices=2, **kwargs), precision=precision, **QUIET).strategy
    return strategy._build_config(_Trainer())


def test_defaults_are_lightnings() -> None:
    config = build()
    assert config["zero_optimization"] == {
        "stage": 2,
        "contiguous_gradients": True,
        "overlap_comm": True,
        "allgather_partitions": True,
        "reduce_scatter": True,
        "allgather_bucket_size": 200_000_000,
        "reduce_bucket_size": 200_000_000,
        "sub_group_size": 1_000_000_000_000,
    }
    assert config["zero_allow_untested_optimizer"] is True
    assert "aio" not in config and "fp16" not in config
    assert config["activation_checkpointing"] == dict.fromkeys(
        ("partition_activations", "cpu_checkpointing", "contiguous_memory_optimization", "synchronize_checkpoint_boundary"), False
    )


@pytest.mark.parametrize(
    ("kwargs", "section", "expected"),
    [
        ({"stage": 1}, "zero_optimization", {"stage": 1}),
        ({"contiguous_gradients": False}, "zero_optimization", {"contiguous_gradients": False}),
        ({"overlap_comm": False}, "zero_optimization", {"overlap_comm": False}),
        ({"allgather_partitions": False}, "zero_optimization", {"allgather_partitions": False}),
        ({"reduce_scatter": False}, "zero_optimization", {"reduce_scatter": False}),
        ({"allgather_bucket_size": 123}, "zero_optimization", {"allgather_bucket_size": 123}),
        ({"reduce_bucket_size": 456}, "zero_optimization", {"reduce_bucket_size": 456}),
        ({"sub_group_size": 789}, "zero_optimization", {"sub_group_size": 789}),
        ({"zero_allow_untested_optimizer": False}, "zero_allow_untested_optimizer", False),
        ({"partition_activations": True}, "activation_checkpointing", {"partition_activations": True}),
        ({"cpu_checkpointing": True}, "activation_checkpointing", {"cpu_checkpointing": True}),
        ({"contiguous_memory_optimization": True}, "activation_checkpointing", {"contiguous_memory_optimization": True}),
        ({"synchronize_checkpoint_boundary": True}, "activation_checkpointing", {"synchronize_checkpoint_boundary": True}),
    ],
)
def test_each_keyword_lands_in_the_config(kwargs: dict[str, Any], section: str, expected: Any) -> None:
    got = build(**kwargs)[section]
    if isinstance(expected, dict):
        assert {k: got[k] for k in expected} == expected
    else:
        assert got == expected


def test_offload_sections() -> None:
    config = build(
        stage=3,
        offload_optimizer=True,
        offload_parameters=True,
        offload_optimizer_device="nvme",
        offload_params_device="nvme",
        nvme_path="/scratch",
        optimizer_buffer_count=7,
        params_buffer_count=6,
        params_buffer_size=1000,
        max_in_cpu=2000,
        pin_memory=True,
        block_size=4096,
        queue_depth=3,
        single_submit=True,
        overlap_events=False,
        thread_count=2,
    )
    zero = config["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "nvme", "nvme_path": "/scratch", "buffer_count": 7, "pin_memory": True}
    assert zero["offload_param"] == {
        "device": "nvme",
        "nvme_path": "/scratch",
        "buffer_count": 6,
        "buffer_size": 1000,
        "max_in_cpu": 2000,
        "pin_memory": True,
    }
    assert config["aio"] == {"block_size": 4096, "queue_depth": 3, "single_submit": True, "overlap_events": False, "thread_count": 2}
    # cpu offload: no aio section
    assert "aio" not in build(offload_optimizer=True)


def test_remote_device_places_the_parameter_partitions() -> None:
    assert build(stage=3, remote_device="cpu")["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "offload_param" not in build(stage=3)["zero_optimization"]
    with pytest.raises(ValueError, match="remote_device='cpu'\\) needs ZeRO stage 3"):
        build(stage=2, remote_device="cpu")
    with pytest.raises(ValueError, match="offload_params_device='disk'"):
        DeepSpeedStrategy(offload_params_device="disk")


def test_zero_optimization_false_leaves_zero_off() -> None:
    config = build(zero_optimization=False)
    assert "zero_optimization" not in config
    assert DeepSpeedStrategy(zero_optimization=False).stage == 2  # the stage only applies with ZeRO on


def test_loss_scaling_keywords_go_to_fp16() -> None:
    config = build("16-mixed", loss_scale=128.0, initial_scale_power=8, loss_scale_window=50, hysteresis=3, min_loss_scale=4)
    assert config["fp16"] == {
        "enabled": True,
        "loss_scale": 128.0,
        "initial_scale_power": 8,
        "loss_scale_window": 50,
        "hysteresis": 3,
        "min_loss_scale": 4,
    }
    assert build("bf16-mixed", loss_scale=128.0)["bf16"] == {"enabled": True}


def test_option_defaults_match_the_signature() -> None:
    import inspect

    params = inspect.signature(DeepSpeedStrategy.__init__).parameters
    for name, default in OPTION_DEFAULTS.items():
        assert params[name].default == default, name
    assert params["logging_batch_size_per_gpu"].default == "auto"
    assert DeepSpeedStrategy().logging_batch_size_per_gpu is None


def test_load_full_weights_reads_a_single_file_checkpoint(tmp_path: Any) -> None:
    torch.manual_seed(0)
    module = Regressor()
    trainer = ember.Trainer(max_epochs=1, **QUIET)
    trainer.fit(module, DataLoader(regression_data(), batch_size=16))
    path = str(tmp_path / "full.ckpt")
    trainer.save_checkpoint(path)
    with pytest.raises(ValueError, match="not a directory"):
        DeepSpeedStrategy().load_checkpoint(path)
    strategy = DeepSpeedStrategy(load_full_weights=True)
    loaded = strategy.load_checkpoint(path)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(loaded["state_dict"][name], value)
    assert loaded["optimizer_states"] == [OPTIMIZER_MARKER] and loaded["global_step"] == trainer.global_step
    assert strategy._pending_load is not None and strategy._pending_load[0] is None


# --------------------------------------------------------------------------- with DeepSpeed


@pytest.mark.slow
def test_logging_level_and_activation_checkpointing_reach_deepspeed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    deepspeed = pytest.importorskip("deepspeed")
    from ember.plugins.strategies.deepspeed_config import apply_runtime_options

    strategy = DeepSpeedStrategy(devices=2, logging_level=10, partition_activations=False, cpu_checkpointing=True)
    config = strategy._build_config(_Trainer())
    import torch.distributed as dist

    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):  # as the strategy's set-up sets them
        monkeypatch.setenv(name, value)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
        apply_runtime_options(deepspeed, strategy.options, config)
    finally:
        dist.destroy_process_group()
    assert deepspeed.utils.logging.logger.level == 10
    from deepspeed.runtime.activation_checkpointing import checkpointing

    assert checkpointing.CPU_CHECKPOINT is True
    apply_runtime_options(deepspeed, DeepSpeedStrategy().options, build())  # nothing asked of checkpointing: no group needed
    assert deepspeed.utils.logging.logger.level == 30


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exclude_frozen_parameters_leaves_them_out_of_the_checkpoint(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("deepspeed")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    saved: dict[bool, set[str]] = {}
    for exclude in (False, True):
        path = str(tmp_path / f"ckpt_{exclude}")
        torch.manual_seed(0)
        trainer = ember.Trainer(
            strategy=DeepSpeedStrategy(devices=2, exclude_frozen_parameters=exclude),
            devices=2,
            max_epochs=1,
            callbacks=[SaveAtEnd(path)],
            **QUIET,
        )
        trainer.fit(FrozenFirst(), DataLoader(regression_data(), batch_size=8))
        states = torch.load(os.path.join(path, "ember", "mp_rank_00_model_states.pt"), map_location="cpu", weights_only=False)
        saved[exclude] = set(states["module"])
    assert "module.net.0.weight" in saved[False]
    assert "module.net.0.weight" not in saved[True] and "module.net.2.weight" in saved[True]
