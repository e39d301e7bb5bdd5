"""The CUDA accelerator: device parsing (with a faked ``torch.cuda``), clear
errors where no GPU is present, and real placement on a GPU when there is one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ember
from ember.plugins.accelerators import cpu as cpu_mod
from ember.plugins.accelerators import cuda as cuda_mod
from ember.plugins.accelerators import mps as mps_mod
from ember.plugins.accelerators.cuda import CUDAAccelerator
from ember.plugins.accelerators.mps import MPSAccelerator
from ember.resolve import auto_accelerator
from ember.roles import RoleRegistry
from ember.testing import quiet_trainer


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``fake_gpus(n, visible="...")``: torch.cuda reports ``n`` devices."""

    def fake(n: int, visible: str | None = None) -> CUDAAccelerator:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        return CUDAAccelerator()

    return fake


def cuda(*indices: int) -> list[torch.device]:
    return [torch.device("cuda", i) for i in indices]


@pytest.mark.parametrize(
    "devices,expected",
    [
        (1, [0]),
        (3, [0, 1, 2]),
        (-1, [0, 1, 2, 3]),
        ("-1", [0, 1, 2, 3]),
        ("auto", [0, 1, 2, 3]),
        (None, [0, 1, 2, 3]),
        ("2", [0, 1]),
        ([1, 3], [1, 3]),
        ((2,), [2]),
        ("0,2", [0, 2]),
        (" 1, 3 ", [1, 3]),
        ("3,", [3]),
    ],
)
def test_parse_devices(fake_gpus: Any, devices: Any, expected: list[int]) -> None:
    assert fake_gpus(4).parse_devices(devices) == cuda(*expected)


def test_too_many_devices_says_what_is_visible(fake_gpus: Any) -> None:
    acc = fake_gpus(1, visible="3")
    with pytest.raises(ValueError, match=r"devices=4 but only 1 CUDA device is visible \(CUDA_VISIBLE_DEVICES='3'\)"):
        acc.parse_devices(4)
    acc = fake_gpus(2)
    with pytest.raises(ValueError, match=r"devices='3' but only 2 CUDA devices are visible \(CUDA_VISIBLE_DEVICES is not set\)"):
        acc.parse_devices("3")


def test_index_out_of_range_names_the_valid_ones(fake_gpus: Any) -> None:
    acc = fake_gpus(2, visible="0,1")
    with pytest.raises(ValueError, match=r"devices=\[1, 2\] names GPU index 2.*2 CUDA devices are visible.*valid indices: 0 to 1"):
        acc.parse_devices([1, 2])
    with pytest.raises(ValueError, match=r"GPU index 5.*valid indices: 0\b"):
        fake_gpus(1).parse_devices("5,")


@pytest.mark.parametrize(
    "devices,error,match",
    [
        (0, ValueError, r"devices=0 is not a number of GPUs.*accelerator='cpu'"),
        (-3, ValueError, r"devices=-3 is not a number of GPUs"),
        ([], ValueError, r"names no GPU"),
        ([0, 0], ValueError, r"more than once"),
        (["a"], TypeError, r"must be ints"),
        ([True], TypeError, r"must be ints"),
        (True, TypeError, r"not valid for the CUDA accelerator"),
        (1.5, TypeError, r"not valid for the CUDA accelerator"),
        ("0,x", ValueError, r"not a list of GPU indices"),
        ("many", ValueError, r"devices='many' is not valid for the CUDA accelerator"),
    ],
)
def test_impossible_values(fake_gpus: Any, devices: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        fake_gpus(2).parse_devices(devices)


@pytest.mark.parametrize("devices", [1, "auto", -1, [0], "0,"])
def test_no_gpu_at_all_says_what_was_found(fake_gpus: Any, devices: Any) -> None:
    acc = fake_gpus(0, visible="")
    with pytest.raises(RuntimeError, match=r"devices=.* but .*(built without CUDA|finds no CUDA device \(CUDA_VISIBLE_DEVICES='')"):
        acc.parse_devices(devices)


def test_unavailable_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "built without CUDA support" in CUDAAccelerator.unavailable_reason()
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    reason = CUDAAccelerator.unavailable_reason()
    assert "CUDA 12.4" in reason and "finds no CUDA device" in reason and "CUDA_VISIBLE_DEVICES=''" in reason


def test_setup_device_selects_the_gpu(fake_gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    acc = fake_gpus(2)
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    acc.setup_device(torch.device("cuda", 1))
    assert chosen == [torch.device("cuda", 1)]
    with pytest.raises(ValueError, match="cannot set up cpu"):
        acc.setup_device(torch.device("cpu"))


def builtin_accelerators() -> RoleRegistry:
    registry = RoleRegistry()
    for module in (cpu_mod, cuda_mod, mps_mod):
        module.register_roles(registry)
    return registry


def test_auto_prefers_cuda_when_present(fake_gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    registry = builtin_accelerators()
    assert {"cpu", "cuda", "gpu", "mps"} <= set(registry.names("accelerator"))
    fake_gpus(0)
    assert auto_accelerator(registry) == "cpu"
    fake_gpus(2)
    assert auto_accelerator(registry) == "cuda"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert auto_accelerator(registry) == "cuda"  # 10 beats MPS's 5
    fake_gpus(0)
    assert auto_accelerator(registry) == "mps"


def test_gpu_alias_picks_cuda_then_mps(fake_gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = builtin_accelerators()
    fake_gpus(1)
    assert isinstance(registry.create("accelerator", "gpu"), CUDAAccelerator)
    fake_gpus(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert isinstance(registry.create("accelerator", "gpu"), MPSAccelerator)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"accelerator='gpu' was requested, but no GPU is usable: .*CUDA.*, and .*MPS"):
        registry.create("accelerator", "gpu")


def test_trainer_registers_the_accelerators(make_trainer: Any) -> None:
    trainer = make_trainer()
    assert {"cpu", "cuda", "gpu", "mps"} <= set(trainer._registry.names("accelerator"))


def test_priorities() -> None:
    assert CUDAAccelerator.auto_priority == 10 and CUDAAccelerator.name == "cuda"
    assert cuda_mod.cuda_accelerator.auto_priority == 10
    assert cuda_mod.gpu_accelerator.auto_priority < 0  # "gpu" is an alias, never chosen by "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "gpu"])
def test_trainer_without_cuda_says_what_was_found(tmp_path: Path, name: str) -> None:
    with pytest.raises(
        RuntimeError, match=rf"accelerator='{name}' was requested, but .*(built without CUDA|finds no CUDA device).*accelerator='cpu'"
    ):
        ember.Trainer(accelerator=name, default_root_dir=tmp_path, logger=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_trainer_with_an_accelerator_object_and_no_cuda(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"devices=1 but .*(built without CUDA|finds no CUDA device)"):
        ember.Trainer(accelerator=CUDAAccelerator(), devices=1, default_root_dir=tmp_path, logger=False)


# --------------------------------------------------------------------------- GPU only


def gpu_trainer(tmp_path: Path, **kwargs: Any) -> ember.Trainer:
    return quiet_trainer(tmp_path, **{"num_sanity_val_steps": 0, "max_epochs": None, "enable_fault_tolerance": None, **kwargs})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("accelerator", ["cuda", "gpu", "auto"])
def test_real_gpu_placement(tmp_path: Path, regressor: Any, loaders: Any, accelerator: str) -> None:
    train, val = loaders
    seen: set[torch.device] = set()

    class Model(regressor):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.add(batch[0].device)
            return super().training_step(batch, batch_idx)

    model_ = Model()
    trainer = gpu_trainer(tmp_path, accelerator=accelerator, devices=1, max_epochs=2)
    assert isinstance(trainer.accelerator, CUDAAccelerator)
    assert trainer.strategy.root_device == torch.device("cuda", 0)
    trainer.fit(model_, train, val)
    assert seen == {torch.device("cuda", 0)}
    assert all(p.device == torch.device("cuda", 0) for p in model_.parameters())
    assert torch.cuda.current_device() == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_parse_devices_and_last_gpu(tmp_path: Path, regressor: Any, loaders: Any) -> None:
    acc = CUDAAccelerator()
    count = torch.cuda.device_count()
    assert acc.parse_devices(-1) == cuda(*range(count))
    with pytest.raises(ValueError, match=f"devices={count + 1} but only {count} CUDA device"):
        acc.parse_devices(count + 1)
    last = count - 1
    train, _ = loaders
    model_ = regressor()
    trainer = gpu_trainer(tmp_path, accelerator="cuda", devices=[last], max_epochs=1)
    trainer.fit(model_, train)
    assert model_.layer.weight.device == torch.device("cuda", last)
    assert torch.cuda.current_device() == last
