"""Where the automatic step sets the gradients to None.

When nothing observes ``zero_grad`` (no ``on_before_zero_grad`` anywhere, no
custom ``optimizer_zero_grad``), ember clears the gradients before
``training_step`` rather than after it: the old gradients' memory is then free
before the forward allocates (measured in docs/benchmarks.md). These tests pin
both placements and check that the weights do not depend on which one ran,
against Lightning itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import ember
from ember.testing import TinyModule, quiet_trainer


class GradSpy(TinyModule):
    """Records, at each ``training_step``, whether the parameters hold a gradient."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grad_seen: list[bool] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.grad_seen.append(self.layer.weight.grad is not None)
        return super().training_step(batch, batch_idx)


class WatchesZeroGrad(GradSpy):
    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        pass


class CustomZeroGrad(GradSpy):
    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()


class ZeroGradCallback(ember.Callback):
    def on_before_zero_grad(self, trainer: Any, module: Any, optimizer: Any) -> None:
        pass


def _fit(tmp_path: Any, module: GradSpy, **kwargs: Any) -> GradSpy:
    quiet_trainer(tmp_path, max_epochs=1, **kwargs).fit(module)
    return module


def test_unobserved_zero_grad_clears_before_training_step(tmp_path: Any) -> None:
    module = _fit(tmp_path, GradSpy())
    assert module.grad_seen == [False] * 4


@pytest.mark.parametrize(
    "module_cls, callbacks",
    [(WatchesZeroGrad, []), (CustomZeroGrad, []), (GradSpy, [ZeroGradCallback()])],
    ids=["module-hook", "custom-optimizer_zero_grad", "callback-hook"],
)
def test_observed_zero_grad_keeps_lightning_order(tmp_path: Any, module_cls: type[GradSpy], callbacks: list[Any]) -> None:
    module = _fit(tmp_path, module_cls(), callbacks=callbacks)
    # Lightning's order: training_step still sees the previous step's gradient.
    assert module.grad_seen == [False, True, True, True]


def test_accumulation_clears_once_per_window(tmp_path: Any) -> None:
    module = _fit(tmp_path, GradSpy(n=96), accumulate_grad_batches=2)
    assert module.grad_seen == [False, True] * 3


def test_weights_match_lightning_with_either_placement(tmp_path: Any) -> None:
    pl = pytest.importorskip("pytorch_lightning")

    class LightningTiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.inner = TinyModule()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.inner(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.inner.lr)

    reference = LightningTiny()
    pl.Trainer(
        max_epochs=2,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path / "pl",
        accelerator="cpu",
    ).fit(reference, TinyModule(n=96).train_dataloader())
    for module_cls in (GradSpy, WatchesZeroGrad):
        module = module_cls(n=96)
        quiet_trainer(tmp_path / module_cls.__name__, max_epochs=2, accumulate_grad_batches=2, limit_val_batches=0).fit(module)
        for ours, theirs in zip(module.state_dict().values(), reference.inner.state_dict().values(), strict=True):
            assert torch.equal(ours, theirs)
