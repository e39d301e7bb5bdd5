"""Compiled modules under ``fsdp`` (FSDP2) with real processes on gloo (2 CPU processes).

Against the same two-process FSDP run uncompiled: ``fit(torch.compile(m))``
(the module is pickled to start the workers and must arrive compiled) and
the ``Compile`` callback with ``training_step=True`` (FSDP calls
``training_step`` as a registered forward method, which gathers the root's
own parameters around it; the compiled step must keep that). Compiled with
``backend="eager"``: dynamo captures the graphs without inductor's minutes
of C++ compiling, and the weights must be bit-identical. The module logs,
``min``-reduced across ranks, whether dynamo traced its forward and whether
dynamo traced ``training_step`` itself (``torch.compiler.is_compiling()`` is
a constant ``True`` while dynamo traces). A checkpoint written by the compiled
run, full or sharded, has the plain names and resumes into a plain module.

The module and callbacks used by spawned workers live at the top of this
file: the spawn start method re-imports them by name.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, ShardableNet, regression_data  # noqa: E402
from torch.utils.data import DataLoader

import ember
from ember.plugins.callbacks.compile import Compile
from ember.plugins.strategies.fsdp import FSDPStrategy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available"),
]

NAMES = ["body.0.bias", "body.0.weight", "head.bias", "head.weight", "scale"]


class Net(ShardableNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1.0 only if dynamo traced the forward (a constant True while tracing), in every rank.
        self.log("compiled", float(torch.compiler.is_compiling()), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="min")
        return super().forward(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.flags(torch.nn.functional.mse_loss(self(x), y))

    def flags(self, loss: torch.Tensor) -> torch.Tensor:
        # 1.0 only if dynamo traced training_step itself, in every rank.
        self.log("step_compiled", float(torch.compiler.is_compiling()), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="min")
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class DirectNet(Net):
    """The same computation, but ``training_step`` calls the children and uses
    the root's ``scale`` itself, without ``forward``: ``scale`` is gathered only
    if FSDP's forward-method wrapper runs around the (compiled) step."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.flags(torch.nn.functional.mse_loss(self.head(self.body(x)) * self.scale, y))


class SaveAfterFirstEpoch(ember.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)  # every rank takes part


class CheckStepPutBack(ember.Callback):
    """After ``Compile``'s teardown (callbacks run in order): ``training_step``
    is FSDP's forward-method wrapper again, not the compiled step."""

    def teardown(self, trainer: Any, module: Any, stage: str) -> None:
        step = module.__dict__.get("training_step")
        assert step is not None and not getattr(step, "_ember_compiled_step", False), step


def fsdp_fit(model: Any, epochs: int = 2, callbacks: Any = (), ckpt_path: str | None = None, **strategy_kwargs: Any) -> ember.Trainer:
    trainer = ember.Trainer(strategy=FSDPStrategy(devices=2, **strategy_kwargs), max_epochs=epochs, callbacks=list(callbacks), **QUIET)
    trainer.fit(model, DataLoader(regression_data(), batch_size=8), ckpt_path=ckpt_path)
    assert trainer.global_step == 4 * epochs and trainer.state.status == "finished"
    return trainer


def fresh(cls: type[Net] = Net) -> Net:
    torch.manual_seed(3)
    return cls()


@pytest.fixture(scope="module")
def uncompiled() -> dict[str, torch.Tensor]:
    """Two epochs of the same two-process FSDP run, uncompiled."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
            mp.delenv(name, raising=False)
        model = fresh()
        trainer = fsdp_fit(model)
        assert trainer.callback_metrics["compiled"].item() == 0.0 and trainer.callback_metrics["step_compiled"].item() == 0.0
        return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def assert_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == NAMES
    for name, value in got.items():
        assert torch.equal(value, expected[name]), (name, value, expected[name])


def checkpoint_names(path: str) -> list[str]:
    """The weight names a full (one file) or sharded (a directory) checkpoint holds."""
    if os.path.isfile(path):
        return sorted(torch.load(path, weights_only=True)["state_dict"])
    import torch.distributed.checkpoint as dcp

    keys = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    return sorted(k[len("model.") :] for k in keys if k.startswith("model."))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("state_dict_type", ["full", "sharded"])
def test_fit_of_torch_compile_trains_checkpoints_and_resumes_plain(
    tmp_path: Any, no_launcher_env: None, uncompiled: dict[str, torch.Tensor], state_dict_type: str
) -> None:
    path = str(tmp_path / "epoch1.ckpt")
    model = fresh()
    trainer = fsdp_fit(torch.compile(model, backend="eager"), callbacks=[SaveAfterFirstEpoch(path)], state_dict_type=state_dict_type)
    assert trainer.callback_metrics["compiled"].item() == 1.0  # every rank ran the compiled forward
    assert_equal(model.state_dict(), uncompiled)
    assert checkpoint_names(path) == NAMES  # no _orig_mod.
    # Resumed into a plain module under FSDP: the rest of the run, exactly.
    plain = fresh()
    resumed = fsdp_fit(plain, ckpt_path=path, state_dict_type=state_dict_type)
    assert resumed.callback_metrics["compiled"].item() == 0.0
    assert_equal(plain.state_dict(), uncompiled)


@pytest.mark.timeout(180)
def test_compile_callback_with_training_step_under_fsdp(tmp_path: Any, no_launcher_env: None, uncompiled: dict[str, torch.Tensor]) -> None:
    """FSDP calls the compiled training_step inside its forward-method wrapper
    (``self.scale`` is gathered), and dynamo traces it in every rank."""
    path = str(tmp_path / "epoch1.ckpt")
    model = fresh(DirectNet)
    callback = Compile(backend="eager", training_step=True, optimizer_step=True, verbose=False)
    trainer = fsdp_fit(model, callbacks=[callback, SaveAfterFirstEpoch(path), CheckStepPutBack()], state_dict_type="full")
    assert trainer.callback_metrics["step_compiled"].item() == 1.0
    assert_equal(model.state_dict(), uncompiled)
    assert checkpoint_names(path) == NAMES
    plain = fresh()
    plain.load_state_dict(torch.load(path, weights_only=True)["state_dict"])  # loads into a plain module
