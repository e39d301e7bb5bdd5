"""A fork-started run in a process that already has a process group.

``strategy='ddp'`` with ``devices=1`` makes a group of one in the calling
process and keeps it after ``fit`` (a later ``trainer.test()`` uses it). A
worker forked later inherited that group without gloo's threads, took it for
its own, and waited forever in its first collective. Now the launcher
destroys a group an earlier ember run kept before it forks, and refuses one
ember did not make, with what to do."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
from strategy_helpers import QUIET, Regressor, regression_data
from torch.utils.data import DataLoader

import ember
from ember.errors import UserError
from ember.plugins.strategies.ddp import DDPStrategy, find_free_port

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _fit(strategy: DDPStrategy, steps: int = 2) -> tuple[Regressor, ember.Trainer]:
    torch.manual_seed(0)
    module = Regressor()
    trainer = ember.Trainer(strategy=strategy, max_steps=steps, **QUIET)
    trainer.fit(module, DataLoader(regression_data(), batch_size=8))
    return module, trainer


def test_a_group_of_one_leaves_no_address_in_the_environment(clean_env: None) -> None:
    _, trainer = _fit(DDPStrategy(devices=1))
    assert trainer.global_step == 2 and dist.is_initialized()  # kept after fit, as before
    # A later run's launcher and workers would otherwise meet on this group's port.
    assert "MASTER_PORT" not in os.environ and "MASTER_ADDR" not in os.environ


def test_fork_refuses_a_group_ember_did_not_make(clean_env: None) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{find_free_port()}", rank=0, world_size=1)
    trainer = ember.Trainer(strategy=DDPStrategy(devices=2, start_method="fork"), max_steps=2, **QUIET)
    with pytest.raises(UserError, match=r"destroy_process_group\(\) before fit, or use start_method='popen'"):
        trainer.fit(Regressor(), DataLoader(regression_data(), batch_size=8))
    assert dist.is_initialized()  # the user's group is left alone


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fork_after_an_in_process_run_trains(clean_env: None) -> None:
    """Hung until the pytest timeout before the fix."""
    _fit(DDPStrategy(devices=1))
    assert dist.is_initialized()
    forked, trainer = _fit(DDPStrategy(devices=2, start_method="fork"), steps=3)
    assert trainer.global_step == 3
    popen, _ = _fit(DDPStrategy(devices=2, start_method="popen"), steps=3)
    for name, value in forked.state_dict().items():
        assert torch.equal(value, popen.state_dict()[name]), name
