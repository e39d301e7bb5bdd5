"""The role checks of ember.testing catch broken providers (each check is run
on a provider that breaks one promise, so a check that stops checking fails here)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from ember import testing
from ember.plugins.accelerators.cpu import CPUAccelerator
from ember.plugins.checkpoint_io.torch_io import TorchCheckpointIO
from ember.plugins.environments.local import LocalEnvironment
from ember.plugins.precision.true_precision import TruePrecision
from ember.plugins.strategies.single_device import SingleDeviceStrategy


class ForgetfulIO(TorchCheckpointIO):
    """Drops the optimizer states on save."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        super().save_checkpoint({k: v for k, v in checkpoint.items() if k != "optimizer_states"}, path)


class StickyIO(TorchCheckpointIO):
    def remove_checkpoint(self, path: str) -> None:
        pass


class StringRanks(LocalEnvironment):
    def world_size(self) -> int:
        return os.environ.get("WORLD_SIZE", "1")  # type: ignore[return-value]


class NoStepPrecision(TruePrecision):
    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Any = None) -> Any:
        return None


class NoBackwardPrecision(TruePrecision):
    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        pass


class ListBatchStrategy(SingleDeviceStrategy):
    def batch_to_device(self, batch: Any) -> Any:
        return list(batch.values()) if isinstance(batch, dict) else batch


class MaybeAccelerator(CPUAccelerator):
    @staticmethod
    def is_available() -> bool:  # type: ignore[override]
        return 1  # type: ignore[return-value]


def test_good_providers_pass(tmp_path: Path) -> None:
    testing.check_checkpoint_io(TorchCheckpointIO(), tmp_path)
    testing.check_cluster_environment(LocalEnvironment(), {}, {"world_size": 1, "global_rank": 0})
    testing.check_precision(TruePrecision())
    testing.check_accelerator(CPUAccelerator())
    testing.check_strategy(SingleDeviceStrategy(**testing.strategy_role_kwargs()), tmp_path)


@pytest.mark.parametrize(
    ("check", "match"),
    [
        (lambda tmp: testing.check_checkpoint_io(ForgetfulIO(), tmp), "differs from what was saved"),
        (lambda tmp: testing.check_checkpoint_io(StickyIO(), tmp), "left the path in place"),
        (lambda tmp: testing.check_checkpoint_io(object(), tmp), "CheckpointIO"),
        (lambda tmp: testing.check_cluster_environment(StringRanks(), {"WORLD_SIZE": "2"}), r"world_size\(\) must return an int"),
        (lambda tmp: testing.check_cluster_environment(LocalEnvironment(), {"WORLD_SIZE": "2", "RANK": "2"}), "not below world_size"),
        (
            lambda tmp: testing.check_cluster_environment(LocalEnvironment(), {"WORLD_SIZE": "2", "RANK": "1"}, {"global_rank": 0}),
            "expected 0",
        ),
        (lambda tmp: testing.check_precision(NoStepPrecision()), "did not change any parameter"),
        (lambda tmp: testing.check_precision(NoBackwardPrecision()), "without a gradient"),
        (lambda tmp: testing.check_accelerator(MaybeAccelerator()), "must return a bool"),
        (lambda tmp: testing.check_strategy(ListBatchStrategy(**testing.strategy_role_kwargs()), tmp), "keep the batch's containers"),
    ],
    ids=[
        "io-drops",
        "io-sticks",
        "io-missing",
        "env-str",
        "env-rank",
        "env-expected",
        "prec-step",
        "prec-backward",
        "acc-bool",
        "strat-batch",
    ],
)
def test_broken_providers_are_named(check: Any, match: str, tmp_path: Path) -> None:
    with pytest.raises(testing.RoleConformanceError, match=match) as info:
        check(tmp_path)
    assert "ember" in str(info.value) or "test_role_conformance_checks" in str(info.value)


def test_strategy_built_with_other_roles_is_caught() -> None:
    kwargs = testing.strategy_role_kwargs()
    strategy = SingleDeviceStrategy(**kwargs)
    strategy.checkpoint_io = TorchCheckpointIO()
    with pytest.raises(testing.RoleConformanceError, match="not the checkpoint_io it was constructed with"):
        testing.check_strategy(strategy, given=kwargs)


def test_unavailable_accelerator_factory_must_name_itself() -> None:
    def vague() -> Any:
        raise RuntimeError("no hardware")

    vague.is_available = lambda: False  # type: ignore[attr-defined]
    with pytest.raises(testing.RoleConformanceError, match="accelerator='vague'"):
        testing.check_accelerator_factory(vague, "vague")
    with contextlib.suppress(testing.RoleConformanceError):
        testing.check_accelerator_factory(CPUAccelerator, "cpu")
