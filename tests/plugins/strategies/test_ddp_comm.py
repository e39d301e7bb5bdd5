"""DDPStrategy's communication hooks, post-local-SGD averaging and start method.

The fast tests train in a process group of one (``devices=1``): DDP still runs
its reducer, so a registered hook is called for every gradient bucket. The
slow ones start two processes."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
from strategy_helpers import QUIET, Regressor, regression_data
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.utils.data import DataLoader

import ember
from ember.plugins.strategies.ddp import DDPStrategy

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

#: Set by the test in the calling process only: a forked worker sees it, a spawned one re-imports this file.
MARK = "imported"


class RecordMark(ember.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: Any, module: Any) -> None:
        with open(f"{self.path}.{trainer.global_rank}", "w") as f:
            f.write(MARK)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def fit(strategy: DDPStrategy, steps: int = 4) -> tuple[Regressor, ember.Trainer]:
    torch.manual_seed(0)
    module = Regressor()
    trainer = ember.Trainer(strategy=strategy, devices=1, max_steps=steps, **QUIET)
    trainer.fit(module, DataLoader(regression_data(), batch_size=8))
    return module, trainer


def test_comm_hook_is_called_with_its_state_and_wrapper(clean_env: None) -> None:
    calls: list[tuple[str, Any]] = []
    state = object()

    def hook(hook_state, bucket):  # type: ignore[no-untyped-def]  (DDP checks real annotations; none here)
        calls.append(("hook", hook_state))
        return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]

    def wrapper(inner: Any) -> Any:
        def wrapped(hook_state, bucket):  # type: ignore[no-untyped-def]
            calls.append(("wrapper", hook_state))
            return inner(hook_state, bucket)

        return wrapped

    module, trainer = fit(DDPStrategy(devices=1, ddp_comm_hook=hook, ddp_comm_state=state, ddp_comm_wrapper=wrapper))
    assert trainer.global_step == 4
    assert len(calls) >= 8 and calls[0] == ("wrapper", state) and calls[1] == ("hook", state)
    # same weights as without a hook: the hook all-reduces as DDP would
    plain, _ = fit(DDPStrategy(devices=1))
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, plain.state_dict()[name])


def test_torchs_compression_hooks_train(clean_env: None) -> None:
    module, _ = fit(
        DDPStrategy(devices=1, ddp_comm_hook=default_hooks.allreduce_hook, ddp_comm_wrapper=default_hooks.fp16_compress_wrapper)
    )
    plain, _ = fit(DDPStrategy(devices=1))
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, plain.state_dict()[name], atol=1e-2, rtol=0)


def test_model_averaging_wraps_the_optimizer(clean_env: None) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import post_localSGD_hook as post_local
    from torch.distributed.optim import PostLocalSGDOptimizer

    state = post_local.PostLocalSGDState(process_group=None, subgroup=None, start_localSGD_iter=2)
    strategy = DDPStrategy(devices=1, ddp_comm_state=state, ddp_comm_hook=post_local.post_localSGD_hook, model_averaging_period=2)
    _, trainer = fit(strategy, steps=6)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, PostLocalSGDOptimizer)
    assert optimizer.averager.step == 6 and optimizer.averager.period == 2
    assert state.iter >= 2  # the hook counted the iterations (local SGD from step 2)


def test_option_errors() -> None:
    with pytest.raises(ValueError, match="needs ddp_comm_state=PostLocalSGDState"):
        DDPStrategy(model_averaging_period=4)
    with pytest.raises(ValueError, match="pass ddp_comm_hook"):
        DDPStrategy(ddp_comm_state=object())
    with pytest.raises(ValueError, match="start_method='thread'"):
        DDPStrategy(start_method="thread")


@pytest.mark.slow
@pytest.mark.parametrize(("start_method", "seen"), [("fork", "set by the test"), ("popen", "imported")])
def test_start_method_starts_the_workers(
    start_method: str, seen: str, clean_env: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.MARK", "set by the test")
    path = str(tmp_path / "mark")
    module = Regressor()
    trainer = ember.Trainer(strategy=DDPStrategy(devices=2, start_method=start_method), max_steps=2, callbacks=[RecordMark(path)], **QUIET)
    trainer.fit(module, DataLoader(regression_data(), batch_size=8))
    for rank in (0, 1):
        with open(f"{path}.{rank}") as f:
            assert f.read() == seen
    assert os.path.exists(f"{path}.1")
