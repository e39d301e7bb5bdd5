"""BatchSizeFinder: the dataset-size cap on CPU, simulated out-of-memory errors
(power and binary search), where the batch size lives, and a real run left
untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.callbacks.batch_size_finder import BatchSizeFinder, BatchSizeFinderError


def _dataset(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


class Data(ember.DataModule):
    def __init__(self, n: int = 100, batch_size: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.n = n

    def setup(self, stage: str) -> None:
        self.train_set = _dataset(self.n)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)


class Net(ember.Module):
    """A small MLP. ``memory_limit`` simulates a device that runs out of
    memory for batches larger than it; ``oom_type`` picks the error."""

    def __init__(self, memory_limit: int | None = None, oom_type: str = "message") -> None:
        super().__init__()
        self.memory_limit = memory_limit
        self.oom_type = oom_type
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.1), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        self.batch_sizes: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.batch_sizes.append(len(x))
        if self.memory_limit is not None and len(x) > self.memory_limit:
            if self.oom_type == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            raise RuntimeError(f"CUDA error: out of memory (batch of {len(x)})")
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _fit(tmp_path: Path, module: ember.Module, finder: BatchSizeFinder, datamodule: Any = None, **kwargs: Any) -> ember.Trainer:
    trainer = ember.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[finder],
        **kwargs,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


@pytest.mark.slow
def test_doubles_up_to_the_dataset_size_on_cpu(tmp_path):
    dm, module = Data(n=100, batch_size=1), Net()
    finder = BatchSizeFinder(init_val=2)
    _fit(tmp_path, module, finder, dm)
    assert [size for size, _ in finder.trials] == [2, 4, 8, 16, 32, 64, 100]
    assert all(ok for _, ok in finder.trials)
    assert finder.optimal_batch_size == dm.batch_size == dm.hparams.batch_size == 100
    assert module.batch_sizes == [100]  # the real run: one epoch of one batch of the whole dataset


@pytest.mark.slow
@pytest.mark.parametrize("oom_type", ["message", "cuda"])
def test_power_mode_keeps_the_last_size_that_fitted(tmp_path, oom_type):
    dm, module = Data(n=1000), Net(memory_limit=24, oom_type=oom_type)
    finder = BatchSizeFinder(mode="power", init_val=2)
    _fit(tmp_path, module, finder, dm, max_steps=2)
    assert finder.trials == [(2, True), (4, True), (8, True), (16, True), (32, False)]
    assert dm.batch_size == finder.optimal_batch_size == 16
    assert module.batch_sizes == [16, 16]  # only the real run trained the real module


@pytest.mark.slow
def test_binsearch_mode_bisects_after_the_first_failure(tmp_path):
    dm, module = Data(n=1000), Net(memory_limit=24)
    finder = BatchSizeFinder(mode="binsearch", init_val=3, steps_per_trial=1)
    _fit(tmp_path, module, finder, dm, max_steps=1)
    # 3, 6, 12, 24 fit and 48 does not; then 36, 30, 27, 25 fail
    assert finder.trials == [(3, True), (6, True), (12, True), (24, True), (48, False), (36, False), (30, False), (27, False), (25, False)]
    assert dm.batch_size == 22  # 24, less the default 5 % safety margin of binsearch (Lightning's margin=0.05)


@pytest.mark.slow
def test_binsearch_margin_and_max_val(tmp_path):
    dm, module = Data(n=1000), Net(memory_limit=24)
    _fit(tmp_path, module, BatchSizeFinder(mode="binsearch", init_val=3, steps_per_trial=1, margin=0.0), dm, max_steps=1)
    assert dm.batch_size == 24
    dm, module = Data(n=1000), Net(memory_limit=1000)
    finder = BatchSizeFinder(mode="power", init_val=3, steps_per_trial=1, max_val=20)
    _fit(tmp_path, module, finder, dm, max_steps=1)
    assert [size for size, _ in finder.trials] == [3, 6, 12, 20] and dm.batch_size == 20


@pytest.mark.slow
def test_the_real_run_is_untouched(tmp_path):
    """Same seed, same data: fitting with the finder gives the weights of
    fitting with the found batch size set from the start."""

    def run(finder: BatchSizeFinder | None, batch_size: int) -> Net:
        ember.seed_everything(3)
        module = Net(memory_limit=40)
        trainer = ember.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            callbacks=[finder] if finder else [],
        )
        trainer.fit(module, datamodule=Data(n=200, batch_size=batch_size))
        return module

    tuned = run(BatchSizeFinder(init_val=4), 1)
    plain = run(None, 32)
    assert tuned.batch_sizes == plain.batch_sizes
    for (name, a), (_, b) in zip(tuned.state_dict().items(), plain.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_batch_size_on_the_module(tmp_path):
    class OwnData(Net):
        def __init__(self) -> None:
            super().__init__(memory_limit=50)
            self.batch_size = 8

        def train_dataloader(self) -> DataLoader:
            return DataLoader(_dataset(500), batch_size=self.batch_size)

    module = OwnData()
    finder = BatchSizeFinder(init_val=8)
    _fit(tmp_path, module, finder, max_steps=1)
    assert module.batch_size == finder.optimal_batch_size == 32
    assert module.batch_sizes == [32]


def test_errors_that_are_not_out_of_memory_propagate_and_restore(tmp_path):
    class Broken(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if len(batch[0]) > 4:
                raise RuntimeError("shape mismatch")
            return super().training_step(batch, batch_idx)

    dm = Data(n=100, batch_size=5)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _fit(tmp_path, Broken(), BatchSizeFinder(init_val=2), dm)
    assert dm.batch_size == 5 and dm.hparams.batch_size == 5


def test_clear_errors(tmp_path):
    with pytest.raises(BatchSizeFinderError, match="even batch size 8"):
        _fit(tmp_path, Net(memory_limit=4), BatchSizeFinder(init_val=8), Data())
    with pytest.raises(BatchSizeFinderError, match="'bs'"):
        _fit(tmp_path, Net(), BatchSizeFinder(batch_arg_name="bs"), Data())
    trainer = ember.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[BatchSizeFinder()], max_steps=1)
    with pytest.raises(BatchSizeFinderError, match="passed to fit"):
        trainer.fit(Net(), DataLoader(_dataset(10), batch_size=2))
    with pytest.raises(ValueError, match="Did you mean 'binsearch'"):
        BatchSizeFinder(mode="binsearh")


@pytest.mark.slow
def test_max_trials(tmp_path):
    dm = Data(n=10_000)
    finder = BatchSizeFinder(init_val=2, max_trials=3)
    with pytest.warns(UserWarning, match="max_trials=3"):
        _fit(tmp_path, Net(), finder, dm, max_steps=1)
    assert [s for s, _ in finder.trials] == [2, 4, 8] and dm.batch_size == 8


def test_registered_as_a_callback_by_name():
    from ember.plugin_manager import PluginManager

    pm = PluginManager()
    pm.load_builtins(())
    finder = pm.build_registry().create("callback", "batch_size_finder", mode="binsearch")
    assert isinstance(finder, BatchSizeFinder) and finder.mode == "binsearch"
