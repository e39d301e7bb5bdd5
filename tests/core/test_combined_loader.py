"""``ember.utilities.CombinedLoader``: the same iteration order as Lightning's in
every mode, and as training data (what ``training_step`` receives, step counts)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.testing import quiet_trainer
from ember.utilities import CombinedLoader

MODES = ["min_size", "max_size_cycle", "max_size", "sequential"]


def loaders() -> dict[str, DataLoader]:
    return {
        "a": DataLoader(TensorDataset(torch.arange(10.0).unsqueeze(1)), batch_size=2),  # 5 batches
        "b": DataLoader(TensorDataset(100 + torch.arange(6.0).unsqueeze(1)), batch_size=2),  # 3 batches
    }


def plain(obj: Any) -> Any:
    """Batches as nested lists/dicts of floats, to compare across implementations."""
    if isinstance(obj, torch.Tensor):
        return obj.flatten().tolist()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("container", ["dict", "list"])
def test_iteration_order_matches_lightning(mode: str, container: str) -> None:
    lightning = pytest.importorskip("pytorch_lightning.utilities")
    iterables: Any = loaders() if container == "dict" else list(loaders().values())
    ours = CombinedLoader(iterables, mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = lightning.CombinedLoader(iterables, mode)
        iter(theirs)  # Lightning needs iter() before len()
        expected = [(plain(b), i, d) for b, i, d in theirs]
        expected_len = len(theirs)
    got = [(plain(b), i, d) for b, i, d in ours]
    assert got == expected
    assert len(ours) == expected_len == {"min_size": 3, "max_size_cycle": 5, "max_size": 5, "sequential": 8}[mode]


def test_structure_and_errors() -> None:
    combined = CombinedLoader(loaders(), "max_size")
    assert combined.mode == "max_size" and len(combined.flattened) == 2
    assert set(combined.sampler) == {"a", "b"}
    with pytest.raises(ValueError, match="mode='longest'"):
        CombinedLoader(loaders(), "longest")
    single = CombinedLoader(range(3))
    assert [b for b, _, _ in single] == [0, 1, 2] and len(single) == 3


class Recorder(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.batches: list[Any] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.batches.append(plain(batch))
        tensors = [t for t in (batch.values() if isinstance(batch, dict) else [batch]) if t is not None]
        return sum(self.layer(t[0]).mean() for t in tensors)  # type: ignore[return-value]

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("mode", MODES)
def test_training_on_a_combined_loader(mode: str, tmp_path: Any) -> None:
    combined = CombinedLoader(loaders(), mode)
    module = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, combined)
    per_epoch = [plain(b) for b, _, _ in CombinedLoader(loaders(), mode)]
    assert module.batches == per_epoch * 2  # training_step gets the combined batch, in the same order each epoch
    assert trainer.num_training_batches == len(per_epoch) and trainer.global_step == 2 * len(per_epoch)


def test_a_dict_of_dataloaders_cycles_the_shorter(tmp_path: Any) -> None:
    module = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, loaders())
    assert module.batches == [plain(b) for b, _, _ in CombinedLoader(loaders(), "max_size_cycle")]
    assert module.batches[3]["b"] == [[100.0, 101.0]]  # "b" started over
