"""``single_device``: batches and modules on one device, checkpoints through
its checkpoint IO, collectives as identities."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
import torch

from ember.plugins.checkpoint_io.torch_io import TorchCheckpointIO
from ember.plugins.precision.true_precision import double_precision, single_precision
from ember.plugins.strategies.single_device import SingleDeviceStrategy, move_to_device

Pair = namedtuple("Pair", ["a", "b"])


class _Movable:
    def __init__(self) -> None:
        self.moved_to: Any = None

    def to(self, device: Any) -> _Movable:
        self.moved_to = device
        return self


def test_move_to_device_walks_nested_batches() -> None:
    custom = _Movable()
    batch = {"x": [torch.zeros(2), Pair(torch.ones(1), 3)], "t": (torch.zeros(1),), "obj": custom, "s": "text"}
    out = move_to_device(batch, torch.device("cpu"))
    assert isinstance(out["x"][1], Pair) and out["x"][1].b == 3
    assert isinstance(out["t"], tuple) and out["s"] == "text"
    assert custom.moved_to == torch.device("cpu")


def _strategy(precision: Any = None) -> SingleDeviceStrategy:
    from ember.plugins.accelerators.cpu import CPUAccelerator

    return SingleDeviceStrategy(CPUAccelerator(), precision or single_precision(), TorchCheckpointIO(), None, device=torch.device("cpu"))


def test_cpu_batches_are_not_copied_in_32_bit() -> None:
    s = _strategy()
    batch = (torch.zeros(2), torch.ones(2))
    assert s.batch_to_device(batch) is batch
    assert s.root_device == torch.device("cpu")
    assert (s.world_size, s.global_rank, s.local_rank, s.is_global_zero) == (1, 0, 0, True)


def test_batches_and_module_follow_the_precision() -> None:
    s = _strategy(double_precision())
    assert s.batch_to_device((torch.zeros(2), torch.arange(2)))[0].dtype == torch.float64
    module = s.setup_module(torch.nn.Linear(2, 1))
    assert module.weight.dtype == torch.float64


def test_collectives_are_identities() -> None:
    s = _strategy()
    t = torch.tensor([1.0, 2.0])
    assert s.reduce(t, "sum") is t
    assert s.all_gather(t).shape == (1, 2)
    assert s.broadcast({"a": 1}) == {"a": 1}
    s.barrier("x")
    opts = [torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)]
    assert s.setup_optimizers(opts) is opts
    assert s.process_dataloader("loader", "fit") == "loader"


def test_checkpoints_go_through_its_checkpoint_io(tmp_path: Any) -> None:
    s = _strategy()
    module = torch.nn.Linear(2, 1)
    path = str(tmp_path / "s.ckpt")
    s.save_checkpoint({"state_dict": s.module_state_dict(module)}, path)
    loaded = s.load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["weight"], module.weight)
    s.remove_checkpoint(path)
    assert not (tmp_path / "s.ckpt").exists()


def test_trainer_chooses_it_for_one_device(make_trainer: Any, regressor: Any, loaders: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    assert isinstance(trainer.strategy, SingleDeviceStrategy)
    assert trainer.strategy.root_device == torch.device("cpu")
    trainer.fit(regressor(), loaders[0])
    assert trainer.global_step == 4 and trainer.world_size == 1 and trainer.is_global_zero
    explicit = make_trainer(strategy="single_device", max_epochs=1)
    assert isinstance(explicit.strategy, SingleDeviceStrategy)


def test_unknown_strategy_and_accelerator_names(make_trainer: Any) -> None:
    with pytest.raises(LookupError, match=r"No strategy named 'single_devce'.*Registered: .*single_device.*Did you mean 'single_device'"):
        make_trainer(strategy="single_devce")
    with pytest.raises(LookupError, match=r"No accelerator named 'cpuu'.*Registered: .*cpu.*Did you mean 'cpu'"):
        make_trainer(accelerator="cpuu")
