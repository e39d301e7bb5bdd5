"""Compiled modules under ``ddp`` with real processes on gloo (2 CPU processes).

Three ways in, each against the same run uncompiled: the ``Compile``
callback (compiles in each worker at ``setup``), ``fit(torch.compile(m))``
with ``ddp_spawn`` (the module is pickled to start the workers, and must
arrive compiled), and ``fit(torch.compile(m))`` under torchrun (every
process runs the script). Compiled with ``backend="eager"``/``"aot_eager"``:
dynamo captures the graphs (and AOT autograd splits forward and backward)
without inductor's minutes of C++ compiling. The module logs, synced with
``min`` across ranks, whether its forward ran compiled in every rank.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

import pytest
import torch
from strategy_helpers import QUIET, regression_data, run_torchrun  # noqa: E402
from torch.utils.data import DataLoader

import ember
from ember.plugins.callbacks.compile import Compile

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available"),
]


class Net(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        # 1.0 only if the forward is compiled in every rank.
        self.log("compiled", float(self._compiled_call_impl is not None), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="min")
        # 1.0 only if dynamo traced training_step itself in every rank (a constant True while tracing).
        self.log("step_compiled", float(torch.compiler.is_compiling()), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="min")
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class SaveAtTrainEnd(ember.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Any, module: Any) -> None:
        trainer.save_checkpoint(self.path)  # every rank takes part; rank zero writes


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def _fresh() -> Net:
    torch.manual_seed(3)
    return Net()


def _spawn_fit(model: Any, callbacks: list[Any]) -> ember.Trainer:
    trainer = ember.Trainer(strategy="ddp_spawn", devices=2, max_epochs=2, callbacks=callbacks, **QUIET)
    trainer.fit(model, DataLoader(regression_data(), batch_size=8))
    assert trainer.global_step == 8 and trainer.state.status == "finished"
    return trainer


@pytest.fixture(scope="module")
def uncompiled() -> dict[str, torch.Tensor]:
    """The same two-process run, uncompiled."""
    mp = pytest.MonkeyPatch()
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        mp.delenv(name, raising=False)
    try:
        model = _fresh()
        trainer = _spawn_fit(model, [])
        assert trainer.callback_metrics["compiled"].item() == 0.0
        assert trainer.callback_metrics["step_compiled"].item() == 0.0
        return {k: v.clone() for k, v in model.state_dict().items()}
    finally:
        mp.undo()


def _check_checkpoint(path: str, weights: dict[str, torch.Tensor]) -> None:
    state = torch.load(path, weights_only=True)["state_dict"]
    assert sorted(state) == sorted(Net().state_dict())  # the original names: no _orig_mod., no module.
    for name, value in weights.items():
        torch.testing.assert_close(state[name], value, atol=0, rtol=0)
    plain = Net.load_from_checkpoint(path)
    assert plain._compiled_call_impl is None


@pytest.mark.timeout(180)
def test_compile_callback_under_ddp_spawn(tmp_path: Any, no_launcher_env: None, uncompiled: dict[str, torch.Tensor]) -> None:
    """The callback compiles the forward, and the update, in each worker."""
    path = str(tmp_path / "end.ckpt")
    model = _fresh()
    trainer = _spawn_fit(model, [Compile(backend="eager", optimizer_step=True), SaveAtTrainEnd(path)])
    assert trainer.callback_metrics["compiled"].item() == 1.0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, uncompiled[name], atol=0, rtol=0)
    _check_checkpoint(path, uncompiled)


@pytest.mark.timeout(180)
def test_compiled_training_step_under_ddp_spawn(
    tmp_path: Any, no_launcher_env: None, uncompiled: dict[str, torch.Tensor], capfd: pytest.CaptureFixture[str]
) -> None:
    """``training_step=True``: DDP's wrapper calls the compiled training_step,
    which dynamo traces in every rank, and the weights are the eager run's."""
    path = str(tmp_path / "end.ckpt")
    model = _fresh()
    trainer = _spawn_fit(model, [Compile(backend="eager", training_step=True), SaveAtTrainEnd(path)])
    assert trainer.callback_metrics["step_compiled"].item() == 1.0
    assert trainer.callback_metrics["compiled"].item() == 1.0
    for name, value in model.state_dict().items():
        assert torch.equal(value, uncompiled[name]), name
    _check_checkpoint(path, uncompiled)
    err = capfd.readouterr()
    assert "does nothing under strategy" not in err.err, err.err  # the workers share the test's stderr
    assert "Compile (fit): " in err.out  # rank zero's report


@pytest.mark.timeout(180)
def test_fit_of_torch_compile_under_ddp_spawn(tmp_path: Any, no_launcher_env: None, uncompiled: dict[str, torch.Tensor]) -> None:
    """``fit(torch.compile(m))``: the module reaches the workers compiled, with
    the caller's backend, and comes back compiled."""
    path = str(tmp_path / "end.ckpt")
    model = _fresh()
    trainer = _spawn_fit(torch.compile(model, backend="aot_eager"), [SaveAtTrainEnd(path)])
    assert trainer.callback_metrics["compiled"].item() == 1.0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, uncompiled[name], atol=1e-6, rtol=0)
    assert model._compiled_call_impl is not None  # still compiled in the caller, as module.compile() leaves it
    _check_checkpoint(path, model.state_dict())


TORCHRUN_SCRIPT = """
import sys
import warnings
import torch
from torch.utils.data import DataLoader
import ember
sys.path.insert(0, {test_dir!r})
from test_compile_ddp import QUIET, Net, SaveAtTrainEnd, _fresh, regression_data
from ember.plugins.callbacks.compile import Compile

warnings.simplefilter("always")
model = _fresh()
# fit(torch.compile(m)) in every process; the callback adds the compiled update
# and the compiled training_step, which DDP's wrapper calls.
callback = Compile(backend="eager", optimizer_step=True, training_step=True, verbose=False)
trainer = ember.Trainer(strategy="ddp", devices=2, max_epochs=2, callbacks=[callback, SaveAtTrainEnd({ckpt!r})], **QUIET)
trainer.fit(torch.compile(model, backend="eager"), DataLoader(regression_data(), batch_size=8))
assert trainer.world_size == 2 and trainer.strategy.environment.name == "torchelastic"
assert trainer.callback_metrics["compiled"].item() == 1.0, trainer.callback_metrics
assert trainer.callback_metrics["step_compiled"].item() == 1.0, trainer.callback_metrics
if trainer.is_global_zero:
    torch.save(model.state_dict(), {out!r})
# One write per rank: two ranks share the stdout, and print() may write in pieces.
sys.stdout.write(f"rank {{trainer.global_rank}} done {{trainer.global_step}} frames {{callback.stats.frames}}\\n")
sys.stdout.flush()
"""


@pytest.mark.timeout(180)
def test_fit_of_torch_compile_under_torchrun(tmp_path: Any, uncompiled: dict[str, torch.Tensor]) -> None:
    out, ckpt = str(tmp_path / "weights.pt"), str(tmp_path / "end.ckpt")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT.format(test_dir=os.path.dirname(__file__), out=out, ckpt=ckpt)))
    proc = run_torchrun(script, tmp_path, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 done 8" in proc.stdout and "rank 1 done 8" in proc.stdout
    assert "does nothing under strategy" not in proc.stderr
    got = torch.load(out)
    for name, value in got.items():
        torch.testing.assert_close(value, uncompiled[name], atol=0, rtol=0)
    _check_checkpoint(ckpt, got)
