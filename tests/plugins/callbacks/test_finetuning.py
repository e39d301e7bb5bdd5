"""BaseFinetuning / BackboneFinetuning: freeze before training, unfreeze into
the live optimizer as a new parameter group, grow its learning rate, and keep
the added groups across a resume."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.callbacks import BackboneFinetuning, BaseFinetuning
from ember.testing import quiet_trainer


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


class WithBackbone(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 1)
        self.trainable_at_epoch_start: list[bool] = []
        self.groups_at_epoch_start: list[list[float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def on_train_epoch_start(self) -> None:
        self.trainable_at_epoch_start.append(self.backbone[0].weight.requires_grad)
        self.groups_at_epoch_start.append([g["lr"] for g in self.trainer.optimizers[0].param_groups])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=0.1)


def _trainer(tmp_path: Any, epochs: int, callback: Any) -> ember.Trainer:
    return quiet_trainer(tmp_path, accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[callback], enable_fault_tolerance=None)


def test_backbone_is_frozen_then_added_with_a_growing_learning_rate(tmp_path: Any) -> None:
    module = WithBackbone()
    backbone_before = module.backbone[0].weight.detach().clone()
    callback = BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_ratio_lr=0.1)
    _trainer(tmp_path, 4, callback).fit(module, _loader())
    # Module hooks run after callbacks: epoch 2 already sees the added group.
    assert module.trainable_at_epoch_start == [False, False, True, True]
    groups = module.groups_at_epoch_start
    assert groups[0] == groups[1] == [0.1]  # the head and the (trainable, train_bn) batch norm
    assert len(groups[2]) == 2 and groups[2][-1] == pytest.approx(0.01)  # 0.1 * backbone_initial_ratio_lr
    assert groups[3][-1] == pytest.approx(0.02)  # doubled by the default lambda_func
    assert not torch.equal(module.backbone[0].weight, backbone_before)
    assert callback.previous_backbone_lr == pytest.approx(0.02)


def test_learning_rate_is_capped_at_the_optimizers_with_should_align(tmp_path: Any) -> None:
    module = WithBackbone()
    callback = BackboneFinetuning(unfreeze_backbone_at_epoch=0, backbone_initial_lr=0.06, lambda_func=lambda epoch: 3.0)
    _trainer(tmp_path, 2, callback).fit(module, _loader())
    assert module.trainable_at_epoch_start == [True, True]
    assert module.groups_at_epoch_start[1][-1] == pytest.approx(0.1)  # 0.18 capped at the head's 0.1


def test_added_groups_are_rebuilt_on_resume(tmp_path: Any) -> None:
    module = WithBackbone()
    first = _trainer(tmp_path, 2, BackboneFinetuning(unfreeze_backbone_at_epoch=1))
    first.fit(module, _loader())
    first.save_checkpoint(tmp_path / "two.ckpt")
    saved_groups = len(first.optimizers[0].param_groups)

    again = WithBackbone()
    callback = BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    second = _trainer(tmp_path, 3, callback)
    second.fit(again, _loader(), ckpt_path=str(tmp_path / "two.ckpt"))  # would fail to load the optimizer state without the group
    assert len(second.optimizers[0].param_groups) == saved_groups == 2
    assert again.groups_at_epoch_start[0][-1] == pytest.approx(0.02)  # continued from the saved previous_backbone_lr (0.01)
    assert callback.previous_backbone_lr == pytest.approx(0.02)


def test_base_finetuning_toolkit() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    BaseFinetuning.freeze(net, train_bn=True)
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
    BaseFinetuning.freeze(net, train_bn=False)
    assert not any(p.requires_grad for p in net.parameters()) and not net[1].track_running_stats
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    BaseFinetuning.unfreeze_and_add_param_group(net, opt, train_bn=False)
    assert len(opt.param_groups) == 2 and len(opt.param_groups[1]["params"]) == 2  # batch norm left out
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1)  # lr / initial_denom_lr
    with pytest.warns(UserWarning, match="already in a group"):
        BaseFinetuning.unfreeze_and_add_param_group(net, opt, lr=0.5)
    assert len(opt.param_groups) == 3 and opt.param_groups[2]["lr"] == 0.5  # only the batch norm was new


def test_a_module_without_backbone_is_named(tmp_path: Any) -> None:
    class NoBackbone(WithBackbone):
        def __init__(self) -> None:
            super().__init__()
            self.body = self.backbone
            del self.backbone

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    with pytest.raises(AttributeError, match=r"BackboneFinetuning needs NoBackbone.backbone"):
        _trainer(tmp_path, 1, BackboneFinetuning()).fit(NoBackbone(), _loader())
