"""LearningRateMonitor: what reaches the logger, read back from the CSV file."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from ember.plugins.callbacks import LearningRateMonitor
from ember.plugins.callbacks.lr_monitor import NoLoggerError
from ember.plugins.loggers import CSVLogger


def logged(logger: CSVLogger, column: str) -> list[tuple[int, float]]:
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as fh:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(fh) if r.get(column)]


def with_optim(base, configure):
    class Model(base):  # type: ignore[misc,valid-type]
        def configure_optimizers(self):
            return configure(self)

    return Model


def test_step_scheduler_logged_every_n_steps(tmp_path, make_trainer, regressor, loaders):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "interval": "step"}}

    logger = CSVLogger(tmp_path)
    monitor = LearningRateMonitor()
    make_trainer(max_epochs=2, log_every_n_steps=3, logger=logger, callbacks=[monitor]).fit(with_optim(regressor, configure)(), *loaders)
    # 8 steps; as Lightning, logged before the steps that make global_step a
    # multiple of 3 (at step counts 2 and 5), with the rate each of them uses
    rows = logged(logger, "lr-SGD")
    assert [s for s, _ in rows] == [2, 5]
    assert [v for _, v in rows] == pytest.approx([0.1 * 0.5**2, 0.1 * 0.5**5])
    assert monitor.lrs["lr-SGD"] == pytest.approx([v for _, v in rows])


def test_epoch_scheduler_logged_at_epoch_start(tmp_path, make_trainer, regressor, loaders):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1)]

    logger = CSVLogger(tmp_path)
    make_trainer(max_epochs=3, log_every_n_steps=1, logger=logger, callbacks=[LearningRateMonitor()]).fit(
        with_optim(regressor, configure)(), *loaders
    )
    rows = logged(logger, "lr-SGD")
    assert [s for s, _ in rows] == [0, 4, 8]
    assert [v for _, v in rows] == pytest.approx([0.1, 0.01, 0.001])


def test_forced_step_interval_without_scheduler(tmp_path, make_trainer, regressor, loaders):
    logger = CSVLogger(tmp_path)
    make_trainer(max_epochs=1, log_every_n_steps=2, logger=logger, callbacks=[LearningRateMonitor(logging_interval="step")]).fit(
        regressor(lr=0.03), *loaders
    )
    assert logged(logger, "lr-SGD") == [(1, 0.03), (3, 0.03)]  # before the 2nd and 4th steps, as Lightning


def test_param_groups_names_momentum_and_weight_decay(tmp_path, make_trainer, regressor, loaders):
    def configure(m):
        opt = torch.optim.SGD(
            [{"params": [m.layer.weight], "lr": 0.1}, {"params": [m.layer.bias], "lr": 0.2, "weight_decay": 0.01}],
            lr=0.1,
            momentum=0.9,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "name": "my_lr"}}

    logger = CSVLogger(tmp_path)
    monitor = LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    make_trainer(max_epochs=1, logger=logger, callbacks=[monitor]).fit(with_optim(regressor, configure)(), *loaders)
    assert logged(logger, "my_lr/pg1") == [(0, 0.1)]
    assert logged(logger, "my_lr/pg2") == [(0, 0.2)]
    assert logged(logger, "my_lr/pg1-momentum") == [(0, 0.9)]
    assert logged(logger, "my_lr/pg1-weight_decay") == [(0, 0.0)]
    assert logged(logger, "my_lr/pg2-weight_decay") == [(0, 0.01)]


def test_adam_momentum_is_beta1(tmp_path, make_trainer, regressor, loaders):
    logger = CSVLogger(tmp_path)
    model = with_optim(regressor, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.8, 0.99)))()
    make_trainer(max_epochs=1, logger=logger, callbacks=[LearningRateMonitor(log_momentum=True)]).fit(model, *loaders)
    assert logged(logger, "lr-Adam-momentum") == [(0, pytest.approx(0.8))]


def test_two_optimizers_of_one_class_get_distinct_names(tmp_path, make_trainer, regressor, loaders):
    class TwoOptimizers(regressor):  # type: ignore[misc,valid-type]
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            first, second = self.optimizers()
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            first.zero_grad()
            second.zero_grad()
            self.manual_backward(loss)
            first.step()
            second.step()
            self.log("train_loss", loss)

        def configure_optimizers(self):
            return [torch.optim.Adam([self.layer.weight], lr=0.01), torch.optim.Adam([self.layer.bias], lr=0.02)]

    logger = CSVLogger(tmp_path)
    make_trainer(max_epochs=1, logger=logger, callbacks=[LearningRateMonitor()]).fit(TwoOptimizers(), *loaders)
    assert logged(logger, "lr-Adam") == [(0, 0.01)]
    assert logged(logger, "lr-Adam-1") == [(0, 0.02)]


def test_needs_a_logger(make_trainer, regressor, loaders):
    with pytest.raises(NoLoggerError, match="no logger"):
        make_trainer(max_epochs=1, logger=False, callbacks=[LearningRateMonitor()]).fit(regressor(), *loaders)


def test_rejects_unknown_interval():
    with pytest.raises(ValueError, match="Did you mean 'step'"):
        LearningRateMonitor(logging_interval="steps")
