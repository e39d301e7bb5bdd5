"""The Lightning names whose behaviour depends on a CUDA device. Skipped
without one; ``tools/run_cuda_checks.py`` runs them on a GPU machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Net(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
        self.devices: list[str] = []
        self.on_gpu_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        self.devices.append(device.type)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.on_gpu_seen.append(self.on_gpu and x.is_cuda)
        return torch.nn.functional.mse_loss(self(x).float(), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader() -> DataLoader:
    x = torch.randn(32, 4)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def _trainer(tmp_path: Path, **kwargs: Any) -> ember.Trainer:
    base = dict(
        default_root_dir=str(tmp_path), max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0, accelerator="cuda", devices=1,
    )  # fmt: skip
    return ember.Trainer(**{**base, **kwargs})


def test_cuda_properties_transfer_hook_and_scaler(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, precision="16-mixed", benchmark=True)
    assert trainer.device_ids == [torch.cuda.current_device()] and trainer.num_devices == 1
    assert torch.backends.cudnn.benchmark is True
    model = Net()
    trainer.fit(model, _loader())
    assert model.devices == ["cuda"] * 4 and all(model.on_gpu_seen) and model.on_gpu
    assert isinstance(trainer.scaler, torch.amp.GradScaler)  # made at the first backward of 16-mixed


def test_init_module_on_cuda_in_bf16_true(tmp_path: Path) -> None:
    with _trainer(tmp_path, precision="bf16-true").init_module():
        layer = torch.nn.Linear(2, 2)
    assert layer.weight.is_cuda and layer.weight.dtype == torch.bfloat16


def test_sync_batchnorm_under_ddp_on_one_gpu(tmp_path: Path) -> None:
    from ember.strategies import DDPStrategy

    model = Net()
    _trainer(tmp_path, strategy=DDPStrategy(devices=[torch.device("cuda", 0)]), sync_batchnorm=True).fit(model, _loader())
    assert isinstance(model.layer[1], torch.nn.SyncBatchNorm)
    plain = Net()
    _trainer(tmp_path, sync_batchnorm=True).fit(plain, _loader())  # single device: left alone
    assert type(plain.layer[1]) is torch.nn.BatchNorm1d


def test_ema_and_measure_flops_on_cuda(tmp_path: Path) -> None:
    from ember.callbacks import EMAWeightAveraging
    from ember.utilities import grad_norm, measure_flops

    model = Net()
    _trainer(tmp_path, callbacks=[EMAWeightAveraging(decay=0.9)]).fit(model, _loader())
    assert model.layer[0].weight.is_cuda
    x = torch.randn(8, 4, device="cuda")
    model.eval()
    assert measure_flops(model, lambda: model(x)) > 0
    model(x).sum().backward()
    assert grad_norm(model, 2)["grad_2.0_norm_total"].is_cuda
