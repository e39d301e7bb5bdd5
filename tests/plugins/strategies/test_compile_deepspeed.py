"""Compiled modules under ``deepspeed`` with real processes on gloo (2 CPU processes).

Against the same two-process DeepSpeed run uncompiled: ``fit(torch.compile(m))``
(the module is pickled to start the workers and must arrive compiled; the
engine wraps the module itself, not the ``OptimizedModule``) and the
``Compile`` callback with ``training_step=True`` (the engine's forward calls
the module's compiled ``training_step``). Compiled with ``backend="eager"``,
so the weights must be bit-identical, under ZeRO-2 and ZeRO-3 (where dynamo
also meets DeepSpeed's parameter-gathering hooks inside the forward, hits
its recompile limit on them and runs them eagerly). The module logs, ``min``-reduced across
ranks, whether dynamo traced its forward and ``training_step``
(``torch.compiler.is_compiling()`` is a constant ``True`` while dynamo
traces). The checkpoint directory the compiled run writes holds the plain
names and resumes into a plain module.

DeepSpeed JIT-builds its shared-memory comm op on first use (~20-50 s on 2
cores) into ``TORCH_EXTENSIONS_DIR`` (one directory per test session unless
set). The module and callbacks used by spawned workers live at the top of
this file: the spawn start method re-imports them by name.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, regression_data  # noqa: E402
from torch.utils.data import DataLoader

import ember
from ember.plugins.callbacks.compile import Compile

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available"),
]

NAMES = ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]


class Net(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1.0 only if dynamo traced the forward, in every rank.
        self.log("compiled", float(torch.compiler.is_compiling()), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="min")
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        # 1.0 only if dynamo traced training_step itself, in every rank.
        self.log("step_compiled", float(torch.compiler.is_compiling()), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="min")
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class SaveAfterFirstEpoch(ember.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)  # every rank writes its part of the directory


def fresh() -> Net:
    torch.manual_seed(3)
    return Net()


def ds_fit(model: Any, strategy: str, callbacks: Any = (), ckpt_path: str | None = None) -> ember.Trainer:
    trainer = ember.Trainer(strategy=strategy, devices=2, max_epochs=2, callbacks=list(callbacks), **QUIET)
    trainer.fit(model, DataLoader(regression_data(), batch_size=8), ckpt_path=ckpt_path)
    assert trainer.global_step == 8 and trainer.state.status == "finished"
    return trainer


LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK")


@pytest.fixture(scope="module")
def ds_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: pip install 'ember[deepspeed]'")
    with pytest.MonkeyPatch.context() as mp:
        for name in LAUNCHER_VARIABLES:
            mp.delenv(name, raising=False)
        if not os.environ.get("TORCH_EXTENSIONS_DIR"):  # one build of the JIT ops for this file's runs
            mp.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.mktemp("torch_extensions")))
        yield


_uncompiled: dict[str, dict[str, torch.Tensor]] = {}


def uncompiled(strategy: str) -> dict[str, torch.Tensor]:
    """Two epochs of the same two-process DeepSpeed run, uncompiled."""
    if strategy not in _uncompiled:
        model = fresh()
        trainer = ds_fit(model, strategy)
        assert trainer.callback_metrics["compiled"].item() == 0.0 and trainer.callback_metrics["step_compiled"].item() == 0.0
        _uncompiled[strategy] = {k: v.clone() for k, v in model.state_dict().items()}
    return _uncompiled[strategy]


def assert_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == NAMES
    for name, value in got.items():
        assert torch.equal(value, expected[name]), (name, value, expected[name])


def saved_weight_names(path: str) -> list[str]:
    """The weight names in the DeepSpeed directory's model states file (ZeRO 1/2; rank zero's for ZeRO-3)."""
    tag = open(os.path.join(path, "latest")).read().strip()
    names = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
    model_file = next(p for p in (os.path.join(path, tag, n) for n in names) if os.path.isfile(p))
    saved = torch.load(model_file, weights_only=False)
    return sorted(saved["module"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["deepspeed_stage_2", "deepspeed_stage_3"])
def test_fit_of_torch_compile_trains_checkpoints_and_resumes_plain(tmp_path: Any, ds_env: None, strategy: str) -> None:
    expected = uncompiled(strategy)
    path = str(tmp_path / "ds-ckpt")
    model = fresh()
    trainer = ds_fit(torch.compile(model, backend="eager"), strategy, callbacks=[SaveAfterFirstEpoch(path)])
    assert trainer.callback_metrics["compiled"].item() == 1.0
    assert_equal(model.state_dict(), expected)
    # DeepSpeed's engine wraps ember's training-step wrapper ("module."), never an OptimizedModule ("_orig_mod.").
    assert saved_weight_names(path) == [f"module.{n}" for n in NAMES]
    plain = fresh()
    resumed = ds_fit(plain, strategy, ckpt_path=path)
    assert resumed.callback_metrics["compiled"].item() == 0.0
    assert_equal(plain.state_dict(), expected)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["deepspeed_stage_2", "deepspeed_stage_3"])
def test_compile_callback_with_training_step_under_deepspeed(ds_env: None, strategy: str) -> None:
    expected = uncompiled(strategy)
    model = fresh()
    trainer = ds_fit(model, strategy, callbacks=[Compile(backend="eager", training_step=True, verbose=False)])
    assert trainer.callback_metrics["step_compiled"].item() == 1.0
    assert trainer.callback_metrics["compiled"].item() == 1.0
    assert_equal(model.state_dict(), expected)
