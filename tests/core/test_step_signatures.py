"""Lightning-compatible module behaviour the compatibility corpus relies on:
step methods without ``batch_idx`` (signatures read once per run),
``toggle_optimizer``/``untoggle_optimizer``, the default ``predict_step``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import ember
from ember.loops import signature
from ember.loops.signature import takes_batch_idx


class BatchOnly(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seen: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch):  # type: ignore[no-untyped-def]
        self.seen.append("train")
        return torch.nn.functional.mse_loss(self(batch[0]), batch[1])

    def validation_step(self, batch):  # type: ignore[no-untyped-def]
        self.seen.append("val")
        self.log("val_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def test_step(self, batch):  # type: ignore[no-untyped-def]
        self.seen.append("test")

    def predict_step(self, batch):  # type: ignore[no-untyped-def]
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_rules_for_passing_batch_idx() -> None:
    assert not takes_batch_idx(lambda batch: None)
    assert takes_batch_idx(lambda batch, batch_idx: None)
    assert takes_batch_idx(lambda batch, i: None)  # a second positional parameter gets it, whatever its name
    assert takes_batch_idx(lambda batch, *args: None)
    assert takes_batch_idx(lambda batch, *, batch_idx: None)
    assert not takes_batch_idx(lambda batch, *, flag=True: None)


@pytest.mark.parametrize("manual", [False, True])
def test_steps_without_batch_idx_run_in_every_loop(h: Any, tmp_path: Any, manual: bool) -> None:
    class Module(BatchOnly):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = not manual

        def training_step(self, batch):  # type: ignore[no-untyped-def]
            loss = super().training_step(batch)
            if manual:
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
            return loss

    module = Module()
    trainer = h.quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, h.loader(16, 8), h.loader(8, 8))
    trainer.test(module, h.loader(8, 8), verbose=False)
    assert module.seen == ["train", "train", "val", "test"]
    assert trainer.global_step == 2
    assert len(trainer.predict(module, h.loader(8, 4))) == 2


def test_signatures_are_read_once_per_run_not_per_step(h: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = signature.takes_batch_idx
    monkeypatch.setattr(signature, "takes_batch_idx", lambda method: calls.append(method.__name__) or real(method))
    h.quiet_trainer(tmp_path, max_epochs=2).fit(BatchOnly(), h.loader(32, 4), h.loader(8, 4))
    assert sorted(calls) == sorted(signature.STEP_METHODS)  # 16 training and 4 validation steps, 4 reads


def test_default_predict_step_passes_the_whole_batch(h: Any, tmp_path: Any) -> None:
    class Identity(BatchOnly):
        predict_step = ember.Module.predict_step  # the default, not BatchOnly's

        def forward(self, batch: Any) -> Any:
            return batch

    batches = h.quiet_trainer(tmp_path).predict(Identity(), h.loader(8, 4))
    assert isinstance(batches[0], list) and len(batches[0]) == 2  # (x, y) reached forward as one batch, as in Lightning


class TwoOptimizers(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(2, 2)
        self.b = torch.nn.Linear(2, 2)
        self.frozen_by_user = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
        self.automatic_optimization = False
        self.during: list[tuple[bool, bool, bool]] = []

    def state(self) -> tuple[bool, bool, bool]:
        return (self.a.weight.requires_grad, self.b.weight.requires_grad, self.frozen_by_user.requires_grad)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_a, opt_b = self.optimizers()
        self.toggle_optimizer(opt_a)
        self.during.append(self.state())
        loss = self.a(batch[0][:, :2]).sum() + self.b(batch[0][:, :2]).sum()
        opt_a.zero_grad()
        self.manual_backward(loss)
        opt_a.step()
        self.untoggle_optimizer(opt_a)
        self.during.append(self.state())
        with self.toggled_optimizer(opt_b):
            self.during.append(self.state())
        self.during.append(self.state())

    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD([*self.a.parameters(), self.frozen_by_user], lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]


def test_toggle_optimizer_freezes_the_other_optimizers_parameters(h: Any, tmp_path: Any) -> None:
    module = TwoOptimizers()
    b_before = module.b.weight.detach().clone()
    h.quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(module, h.loader(8, 8))
    toggled_a, after, toggled_b, after_b = module.during
    assert toggled_a == (True, False, False)  # b frozen; the user's frozen parameter stays frozen
    assert after == (True, True, False)
    assert toggled_b == (False, True, False)
    assert after_b == (True, True, False)
    assert module.b.weight.grad is None and torch.equal(module.b.weight, b_before)  # no gradient reached b
