"""Behaviours checked directly against Lightning (a test-only dependency):
what ``validate()``/``test()`` return, and when and under which names
``LearningRateMonitor`` logs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from frameworks import ember_fw, lightning, recording_logger, trainer
from torch.utils.data import DataLoader, TensorDataset

LIGHTNING = lightning()
pytestmark = pytest.mark.skipif(LIGHTNING is None, reason="Lightning is not installed (pip install -e '.[dev]')")


def _loader(seed: int, n: int = 24, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def _module(fw: Any, optimizers: Any = None) -> Any:
    class Net(fw.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def _loss(self, batch: Any) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self._loss(batch)

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            loss = self._loss(batch)
            self.log("both", loss, on_step=True, on_epoch=True)
            self.log("hidden", loss, logger=False)
            self.log("bar", loss, prog_bar=True)

        def on_validation_epoch_end(self) -> None:
            self.log("at_end", torch.tensor(3.0))

        test_step = validation_step
        on_test_epoch_end = on_validation_epoch_end

        def configure_optimizers(self) -> Any:
            return optimizers(self) if optimizers is not None else torch.optim.SGD(self.parameters(), lr=0.1)

    return Net


@pytest.mark.parametrize("loaders", [1, 2])
def test_validate_and_test_return_what_lightning_returns(tmp_path: Any, loaders: int) -> None:
    out = {}
    for fw in (ember_fw(), LIGHTNING):
        fw.seed_everything(0)
        module = _module(fw)()
        data = [_loader(i) for i in range(loaders)]
        t = trainer(fw, default_root_dir=tmp_path / fw.name)
        out[fw.name] = (t.validate(module, data if loaders > 1 else data[0], verbose=False), t.test(module, data, verbose=False))
    assert out["ember"] == out["lightning"]


@pytest.mark.parametrize(
    "interval,scheduler_interval",
    [(None, "step"), (None, "epoch"), ("step", "epoch"), ("epoch", "step"), (None, None)],
)
def test_learning_rate_monitor_logs_at_lightnings_steps(tmp_path: Any, interval: str | None, scheduler_interval: str | None) -> None:
    def optimizers(module: Any) -> Any:
        opt = torch.optim.SGD([{"params": [module.layer.weight]}, {"params": [module.layer.bias], "lr": 0.05}], lr=0.1, momentum=0.9)
        if scheduler_interval is None:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": scheduler_interval}}

    calls = {}
    for fw in (ember_fw(), LIGHTNING):
        fw.seed_everything(0)
        logger = recording_logger(fw)
        monitor = fw.callbacks.LearningRateMonitor(logging_interval=interval, log_momentum=True)
        t = trainer(fw, max_epochs=2, logger=logger, log_every_n_steps=2, callbacks=[monitor], default_root_dir=tmp_path / fw.name)
        t.fit(_module(fw, optimizers)(), _loader(0, n=40), _loader(1))
        calls[fw.name] = [(step, m) for step, m in logger.calls if any(k.startswith("lr-") for k in m)]
        calls[fw.name + " lrs"] = monitor.lrs
    assert calls["ember"] == calls["lightning"]
    assert calls["ember lrs"] == calls["lightning lrs"]
