"""LearningRateFinder: the range test on real small models, the suggestion on a
problem whose good learning rates are known, and a real run left untouched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.callbacks.lr_finder import LearningRateFinder, LRFinderResult, lr_find, lr_schedule
from ember.testing import quiet_trainer


def _regression_data(n: int = 2048, features: int = 10, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, 1, generator=g)
    return TensorDataset(x, x @ w + 0.1 * torch.randn(n, 1, generator=g))


class LinearRegression(ember.Module):
    """Least squares with plain SGD on standardised features: the loss's
    curvature is about 2 in every direction, so SGD diverges above a learning
    rate of about 1 and the useful rates are roughly 0.01 to 1."""

    def __init__(self, lr: float = 1e-4, dropout: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.drop = torch.nn.Dropout(dropout)
        self.lin = torch.nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.drop(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.5)


def _trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> ember.Trainer:
    return quiet_trainer(
        tmp_path, callbacks=callbacks, **{"accelerator": "cpu", "num_sanity_val_steps": 0, "enable_fault_tolerance": None, **kwargs}
    )


class _Probe(ember.Callback):
    """What the real run starts from."""

    def on_train_start(self, trainer: Any, module: Any) -> None:
        self.weights = {k: v.clone() for k, v in module.state_dict().items()}
        self.optimizer_state = dict(trainer.optimizers[0].state)
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


@pytest.mark.slow
def test_suggestion_is_in_the_known_good_range(tmp_path):
    torch.manual_seed(0)
    module = LinearRegression(lr=1e-4)
    finder = LearningRateFinder(min_lr=1e-5, max_lr=10, num_training_steps=100)
    probe = _Probe()
    loader = DataLoader(_regression_data(), batch_size=64, shuffle=True)
    _trainer(tmp_path, [finder, probe], max_steps=5).fit(module, loader)

    results = finder.results
    assert isinstance(results, LRFinderResult)
    assert len(results.lrs) == len(results.losses) == len(results.raw_losses) > 20
    assert results.lrs == sorted(results.lrs) and results.lrs[0] == pytest.approx(1e-5)
    assert results.diverged  # lr 10 blows the loss up long before the 100th step
    suggestion = finder.suggestion()
    assert 1e-2 <= suggestion <= 1, suggestion
    assert finder.optimal_lr == suggestion
    assert module.hparams.lr == suggestion  # update_attr
    assert probe.lr == suggestion  # the real optimizer was built with it
    assert module.hparams_initial.lr == 1e-4


@pytest.mark.slow
def test_the_real_run_is_exactly_the_run_without_the_finder(tmp_path):
    """With update_attr=False the finder changes nothing: same weights at the
    start, a fresh optimizer, and (random generators restored) the same result."""
    data = _regression_data(512)

    def run(callbacks: list[Any]) -> tuple[LinearRegression, _Probe]:
        ember.seed_everything(7)
        module = LinearRegression(lr=0.05, dropout=0.2)  # dropout and shuffling draw random numbers
        probe = _Probe()
        _trainer(tmp_path, [*callbacks, probe], max_epochs=2).fit(module, DataLoader(data, batch_size=32, shuffle=True))
        return module, probe

    ember.seed_everything(7)
    initial = LinearRegression(lr=0.05, dropout=0.2).state_dict()
    finder = LearningRateFinder(num_training_steps=30, update_attr=False)
    tuned, tuned_probe = run([finder])
    plain, _ = run([])

    assert finder.results is not None and len(finder.results.losses) > 0
    for name, value in initial.items():
        torch.testing.assert_close(tuned_probe.weights[name], value, rtol=0, atol=0)
    assert tuned_probe.optimizer_state == {}  # no step was taken by the real optimizer before training
    assert tuned_probe.lr == 0.05 and tuned.hparams.lr == 0.05
    for (name, a), (_, b) in zip(tuned.state_dict().items(), plain.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_lr_find_function_leaves_the_module_alone():
    module = LinearRegression()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_find(module, DataLoader(_regression_data(), batch_size=64, shuffle=True), min_lr=1e-5, max_lr=10, accelerator="cpu")
    assert 1e-2 <= result.suggestion() <= 1
    assert module.hparams.lr == 1e-4 and module._trainer is None
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.slow
def test_digits_cnn_with_its_one_cycle_schedule(tmp_path):
    """A real CNN whose configure_optimizers builds AdamW + OneCycleLR from
    hparams.lr: the sweep runs without the scheduler, and the real schedule
    peaks at the suggested rate."""
    pytest.importorskip("sklearn")
    digits = Path(__file__).resolve().parents[3] / "examples" / "digits"
    sys.path.insert(0, str(digits))
    try:
        from data import DigitsDataModule
        from model import DigitsCNN
    finally:
        sys.path.remove(str(digits))

    class PeakLR(ember.Callback):
        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.max_lr = trainer.lr_scheduler_configs[0].scheduler.optimizer.param_groups[0]["max_lr"]

    ember.seed_everything(0)
    module, dm = DigitsCNN(channels=8, hidden=32, lr=1.0), DigitsDataModule(batch_size=64)
    finder, peak = LearningRateFinder(min_lr=1e-5, max_lr=1.0, num_training_steps=60), PeakLR()
    _trainer(tmp_path, [finder, peak], max_steps=2, limit_val_batches=0).fit(module, datamodule=dm)
    suggestion = finder.suggestion()
    assert 1e-4 <= suggestion <= 0.5, suggestion
    assert module.hparams.lr == suggestion == peak.max_lr


def test_update_attr_on_a_plain_attribute_and_the_error_without_one(tmp_path):
    class PlainLR(LinearRegression):
        def __init__(self) -> None:
            super().__init__()
            self.rate = 1e-4

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.rate)

    loader = DataLoader(_regression_data(512), batch_size=32, shuffle=True)
    module = PlainLR()
    finder = LearningRateFinder(min_lr=1e-4, max_lr=1, num_training_steps=40, attr_name="rate")
    _trainer(tmp_path, [finder], max_steps=1).fit(module, loader)
    assert module.rate == finder.suggestion() != 1e-4

    with pytest.raises(AttributeError, match=r"PlainLR\.learning_rate"):
        _trainer(tmp_path, [LearningRateFinder(attr_name="learning_rate")], max_steps=1).fit(PlainLR(), loader)


def test_linear_mode_and_schedule():
    assert lr_schedule(1e-3, 1.0, 4, "exponential") == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert lr_schedule(0.1, 0.4, 4, "linear") == pytest.approx([0.1, 0.2, 0.3, 0.4])
    result = lr_find(
        LinearRegression(),
        DataLoader(_regression_data(), batch_size=64, shuffle=True),
        min_lr=1e-3,
        max_lr=3,
        num_training_steps=60,
        mode="linear",
        accelerator="cpu",
    )
    assert result.mode == "linear" and 1e-3 <= result.suggestion() <= 1.5


def test_suggestion_from_a_known_curve():
    lrs = [10 ** (-4 + i / 10) for i in range(40)]
    losses = [1.0] * 15 + [1.0 - 0.05 * i for i in range(1, 11)] + [0.5] * 15  # steepest from index 15 to 25
    result = LRFinderResult(lrs=lrs, losses=losses, raw_losses=losses)
    assert lrs[15] <= result.suggestion() <= lrs[25]
    assert LRFinderResult(lrs=[1e-3, 1e-2], losses=[1.0, 0.5]).suggestion() is None  # too few points


def test_bad_arguments():
    with pytest.raises(ValueError, match="Did you mean 'linear'"):
        LearningRateFinder(mode="lineer")
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        LearningRateFinder(min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        LearningRateFinder(num_training_steps=1)


def test_registered_as_a_callback_by_name():
    from ember.plugin_manager import PluginManager

    pm = PluginManager()
    pm.load_builtins(())
    registry = pm.build_registry()
    finder = registry.create("callback", "lr_finder", max_lr=0.5)
    assert isinstance(finder, LearningRateFinder) and finder.max_lr == 0.5
