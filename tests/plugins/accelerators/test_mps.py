"""The MPS accelerator: one device, clear errors where there is none, and a
real fit on Apple silicon when the tests run there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

import ember
from ember.plugins.accelerators import mps as mps_mod
from ember.plugins.accelerators.mps import MPSAccelerator

MPS_PRESENT = MPSAccelerator.is_available()


@pytest.fixture
def fake_mps(monkeypatch: pytest.MonkeyPatch) -> Any:
    def fake(available: bool, built: bool = True) -> MPSAccelerator:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: available)
        monkeypatch.setattr(torch.backends.mps, "is_built", lambda: built)
        return MPSAccelerator()

    return fake


@pytest.mark.parametrize("devices", [1, "1", -1, "-1", "auto", [0], "0", None])
def test_one_device(fake_mps: Any, devices: Any) -> None:
    assert fake_mps(True).parse_devices(devices) == [torch.device("mps", 0)]


@pytest.mark.parametrize("devices", [2, 0, "0,1", [0, 1], [1], "many"])
def test_more_than_one_device_is_refused(fake_mps: Any, devices: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"devices={devices!r}") + ".*one MPS device"):
        fake_mps(True).parse_devices(devices)


def test_absent_says_what_was_found(fake_mps: Any) -> None:
    with pytest.raises(RuntimeError, match=r"devices=1 on the MPS accelerator, but .*built without MPS support"):
        fake_mps(False, built=False).parse_devices(1)
    with pytest.raises(RuntimeError, match=r"has MPS support but finds no MPS device \(system: .*macOS 12.3"):
        fake_mps(False, built=True).parse_devices("auto")


def test_priority_and_setup(fake_mps: Any) -> None:
    assert MPSAccelerator.auto_priority == 5 and mps_mod.mps_accelerator.auto_priority == 5
    acc = fake_mps(True)
    acc.setup_device(torch.device("mps", 0))
    with pytest.raises(ValueError, match="cannot set up cpu"):
        acc.setup_device(torch.device("cpu"))


def test_factory_refuses_when_absent(fake_mps: Any) -> None:
    fake_mps(False, built=False)
    with pytest.raises(RuntimeError, match=r"accelerator='mps' was requested, but .*built without MPS.*accelerator='cpu'"):
        mps_mod.mps_accelerator()
    fake_mps(True)
    assert isinstance(mps_mod.mps_accelerator(), MPSAccelerator)


@pytest.mark.skipif(MPS_PRESENT, reason="checks the error on a machine without MPS")
def test_trainer_without_mps_says_what_was_found(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"accelerator='mps' was requested, but .*(built without MPS|finds no MPS device)"):
        ember.Trainer(accelerator="mps", default_root_dir=tmp_path, logger=False)


@pytest.mark.skipif(not MPS_PRESENT, reason="needs an Apple MPS device")
def test_real_fit_on_mps(make_trainer: Any, regressor: Any, loaders: Any) -> None:
    train, val = loaders
    model_ = regressor()
    trainer = make_trainer(accelerator="mps", devices=1, max_epochs=3)
    trainer.fit(model_, train, val)
    assert model_.layer.weight.device.type == "mps"
