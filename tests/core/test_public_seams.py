"""The public seams built-ins use, usable by a third party too: the run's
read-only accessors, the optional-capability protocols (``StopsTraining``,
``ReplacesTrainingModule``), checkpoint loading through the checkpoint IO
role, and the launch helpers that ship a run between processes."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch

import ember
from ember import launch
from ember.checkpointing import load_checkpoint_file
from ember.roles import ReplacesTrainingModule, StopsTraining


class PatienceCallback(ember.Callback):
    """A third-party stopping callback: not an EarlyStopping, same members."""

    def __init__(self) -> None:
        self.monitor = "val_loss"
        self.patience = 1
        self.wait_count = 0
        self.stopped_epoch = 0


def test_a_third_party_stopping_callback_is_the_early_stopping_callback(make_trainer: Any) -> None:
    mine = PatienceCallback()
    trainer = make_trainer(callbacks=[ember.Callback(), mine])
    assert isinstance(mine, StopsTraining)
    assert trainer.early_stopping_callback is mine
    assert trainer.early_stopping_callbacks == [mine]
    assert make_trainer(callbacks=[ember.Callback()]).early_stopping_callback is None


def test_explicit_dataloaders_are_what_fit_was_given_and_read_only(h: Any, make_trainer: Any) -> None:
    train, val = h.loader(), h.loader(seed=1)
    trainer = make_trainer(max_epochs=1)
    assert dict(trainer.explicit_dataloaders) == {}
    trainer.fit(h.Regressor(), train_dataloaders=train, val_dataloaders=val)
    assert trainer.explicit_dataloaders["train"] is train and trainer.explicit_dataloaders["val"] is val
    with pytest.raises(TypeError):
        trainer.explicit_dataloaders["train"] = None  # type: ignore[index]


class _Engine(torch.nn.Module):
    """What a strategy like DeepSpeed trains through: wraps the module, counts calls."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, batch: Any, batch_idx: int) -> Any:
        self.calls += 1
        return self.module.training_step(batch, batch_idx)


def test_a_strategy_that_replaces_the_training_module_is_called_by_the_loop(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    strategy = trainer.strategy
    engine: list[_Engine] = []

    def training_module() -> torch.nn.Module:
        if not engine:
            engine.append(_Engine(trainer.module))
        return engine[0]

    strategy.training_module = training_module  # the capability, added to a real single-device strategy
    assert isinstance(strategy, ReplacesTrainingModule)
    trainer.fit(h.TrainOnly(), train_dataloaders=h.loader())
    assert trainer.model is engine[0] and engine[0].calls == 4  # 32 samples / batch 8


def test_load_from_checkpoint_reads_through_the_checkpoint_io_role(h: Any, make_trainer: Any, tmp_path: Any, monkeypatch: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    trainer.fit(h.TrainOnly(), train_dataloaders=h.loader())
    path = str(tmp_path / "m.ckpt")
    trainer.save_checkpoint(path)

    class CountingIO:
        loads = 0

        def load_checkpoint(self, p: str) -> dict[str, Any]:
            CountingIO.loads += 1
            return torch.load(p, weights_only=True)

    assert load_checkpoint_file(path, checkpoint_io=CountingIO())["global_step"] == 4 and CountingIO.loads == 1
    # The default comes from the role registry: with the built-in checkpoint IO disabled there is none.
    monkeypatch.setenv("EMBER_DISABLE_PLUGINS", "ember.plugins.checkpoint_io.torch_io")
    with pytest.raises(LookupError, match="checkpoint_io"):
        h.TrainOnly.load_from_checkpoint(path)
    monkeypatch.delenv("EMBER_DISABLE_PLUGINS")
    loaded = h.TrainOnly.load_from_checkpoint(path)
    assert h.same(h.params_of(loaded), h.params_of(trainer.module))


def test_a_shipped_run_comes_back_into_a_fresh_trainer(h: Any, make_trainer: Any) -> None:
    done = make_trainer(max_epochs=2)
    done.fit(h.TrainOnly(), train_dataloaders=h.loader())
    shipped = pickle.loads(launch.dumps(launch.ship_run(done, "result")))  # as a worker would send it
    assert shipped["return"] == "result"

    fresh = make_trainer(max_epochs=2)
    fresh.module = h.TrainOnly()
    launch.load_shipped_run(fresh, shipped)
    assert (fresh.global_step, fresh.current_epoch, fresh.state.status) == (done.global_step, done.current_epoch, "finished")
    assert h.same(h.params_of(fresh.module), h.params_of(done.module))
    assert set(fresh.callback_metrics) == set(done.callback_metrics)


def test_a_shipped_run_goes_through_the_work_directory(h: Any, make_trainer: Any, tmp_path: Any) -> None:
    """Rank zero writes, the launcher reads: both built-in launchers (spawn
    and ember-xla's) go through these two functions."""
    assert launch.read_shipped_run(str(tmp_path)) is None  # rank zero wrote nothing
    done = make_trainer(max_epochs=1)
    done.fit(h.TrainOnly(), train_dataloaders=h.loader())
    launch.write_shipped_run(str(tmp_path), done, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [launch.RESULT_FILE]  # no temporary file left
    shipped = launch.read_shipped_run(str(tmp_path))
    assert shipped is not None and shipped["return"] == {"a": 1}
    fresh = make_trainer(max_epochs=1)
    fresh.module = h.TrainOnly()
    launch.load_shipped_run(fresh, shipped)
    assert h.same(h.params_of(fresh.module), h.params_of(done.module))


def test_the_run_lives_in_one_run_state(h: Any, make_trainer: Any) -> None:
    from ember.loops.state import RunState

    train = h.loader()
    trainer = make_trainer(max_epochs=2)
    state = trainer.state
    trainer.fit(h.TrainOnly(), train_dataloaders=train)
    assert trainer.state is state and isinstance(state, RunState)  # one record for the trainer's life
    assert (state.fn, state.status, state.global_step, state.current_epoch) == ("fit", "finished", 8, 2)
    assert (trainer.global_step, trainer.current_epoch) == (8, 2)
    assert trainer.train_dataloader is state.train_loader and state.explicit_loaders["train"] is train
    assert trainer.model is state.placed_module
    trainer.should_stop = True
    assert state.should_stop
    trainer.validate(h.Regressor(), dataloaders=h.loader())
    assert (state.fn, state.global_step, state.should_stop) == ("validate", 8, False)  # counters persist; a new run clears the stop
    shipped = launch.ship_run(trainer, None)["run"]
    assert isinstance(shipped, RunState) and shipped.placed_module is None and shipped.train_loader is None


def test_built_in_strategies_declare_their_capabilities(make_trainer: Any) -> None:
    from ember.plugins.strategies.ddp import DDPStrategy
    from ember.roles import DistributesSamplers, GathersObjects, LaunchesProcesses, MovesBatches, SkipsGradientSync

    ddp = make_trainer(strategy="ddp", devices=2).strategy
    assert isinstance(ddp, DDPStrategy)
    for capability in (LaunchesProcesses, SkipsGradientSync, GathersObjects, DistributesSamplers):
        assert isinstance(ddp, capability), capability.__name__
    single = make_trainer().strategy
    assert isinstance(single, MovesBatches) and not isinstance(single, (SkipsGradientSync, GathersObjects, DistributesSamplers))
    assert not make_trainer(strategy="ddp", devices=2, use_distributed_sampler=False).strategy.use_distributed_sampler
