"""``Module.to_torchscript``: scripted and traced modules compute what the
module computes, survive ``torch.jit.save``/``load``, and a trained module
(attached to a trainer, with hyperparameters) exports too."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.export import ExportError
from ember.testing import quiet_trainer


class Scaled(ember.Module):
    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
        self.scale = scale
        self.example_input_array = torch.randn(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.net(x)) * self.scale

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return self(x).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class DataDependent(Scaled):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # a branch: scripting keeps it, tracing would freeze one side
            return self.net(x)
        return -self.net(x)


@pytest.mark.parametrize("method", ["script", "trace"])
def test_exported_module_computes_the_same(method: str, tmp_path: Any) -> None:
    torch.manual_seed(0)
    module = Scaled(scale=3.0)
    module.train()
    path = tmp_path / "sub" / "model.pt"
    exported = module.to_torchscript(file_path=path, method=method)
    assert isinstance(exported, torch.jit.ScriptModule)
    assert module.training and module.net[1].training  # modes restored
    x = torch.randn(7, 3)
    module.eval()
    expected = module(x)
    torch.testing.assert_close(exported(x), expected)
    torch.testing.assert_close(torch.jit.load(str(path))(x), expected)
    assert "__jit_unused_properties__" not in vars(Scaled) and module._trainer is None  # nothing left behind


def test_script_keeps_control_flow_and_works_after_fit(tmp_path: Any) -> None:
    torch.manual_seed(0)
    module = DataDependent()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4))
    scripted = module.to_torchscript()
    module.eval()
    for x in (torch.ones(2, 3), -torch.ones(2, 3)):
        torch.testing.assert_close(scripted(x), module(x))
    assert module.trainer is trainer  # still attached


def test_errors_name_the_fix() -> None:
    module = Scaled()
    with pytest.raises(ValueError, match="method='compile'"):
        module.to_torchscript(method="compile")
    module.example_input_array = None
    with pytest.raises(ExportError, match="no input sample"):
        module.to_torchscript(method="trace")
    traced = module.to_torchscript(method="trace", example_inputs=torch.randn(2, 3))
    assert traced(torch.randn(4, 3)).shape == (4, 2)
