"""``ember.Module`` against real fits: what ``training_step`` may return, the
trainer-facing properties, manual optimization, hyperparameters and
``load_from_checkpoint``."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import ember
from ember.checkpointing import CheckpointError


def _sgd_reference(h: Any, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float = 0.05) -> list[torch.Tensor]:
    model = h.Regressor(lr=lr)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for batch in batches:
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    return h.params_of(model)


# --------------------------------------------------------------------------- training_step outputs
def test_training_step_returning_a_tensor_trains_like_plain_sgd(h: Any, make_trainer: Any) -> None:
    data = h.loader(32, 8)
    model = h.Regressor()
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, data)
    assert trainer.global_step == 8
    assert trainer.current_epoch == 2
    assert h.same(h.params_of(model), _sgd_reference(h, list(data) * 2))


def test_training_step_dict_extra_keys_reach_on_train_batch_end(h: Any, make_trainer: Any) -> None:
    seen: list[dict[str, Any]] = []

    class Grab(ember.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            seen.append(outputs)

    def step(module: Any, batch: Any, batch_idx: int) -> Any:
        return {"loss": module.loss(batch), "tag": f"b{batch_idx}", "pred": module(batch[0])}

    model = h.Regressor()
    model.step_hook = step
    trainer = make_trainer(max_epochs=1, callbacks=[Grab()])
    trainer.fit(model, h.loader(24, 8))
    assert trainer.global_step == 3
    assert [o["tag"] for o in seen] == ["b0", "b1", "b2"]
    assert all(set(o) == {"loss", "tag", "pred"} for o in seen)
    assert all(not o["loss"].requires_grad and not o["pred"].requires_grad for o in seen)
    assert h.same(h.params_of(model), _sgd_reference(h, list(h.loader(24, 8))))


def test_tensor_output_reaches_on_train_batch_end_as_loss_dict(h: Any, make_trainer: Any) -> None:
    seen: list[Any] = []

    class Grab(ember.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            seen.append(outputs)

    model = h.Regressor()
    make_trainer(max_epochs=1, callbacks=[Grab()]).fit(model, h.loader(16, 8))
    assert [set(o) for o in seen] == [{"loss"}, {"loss"}]
    assert all(o["loss"].ndim == 0 and o["loss"] > 0 for o in seen)


def test_training_step_returning_none_skips_the_step(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    model.step_hook = lambda module, batch, i: None
    before = h.params_of(model)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, h.loader(32, 8))
    assert trainer.global_step == 0
    assert h.same(h.params_of(model), before)
    assert len(model.train_batches) == 8  # every batch was seen, none stepped


def test_training_step_skipping_some_batches_steps_on_the_others(h: Any, make_trainer: Any) -> None:
    data = h.loader(32, 8)
    model = h.Regressor()
    model.step_hook = lambda module, batch, i: None if i % 2 == 0 else ...
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, data)
    assert trainer.global_step == 2
    batches = list(data)
    assert h.same(h.params_of(model), _sgd_reference(h, [batches[1], batches[3]]))


def test_training_step_dict_without_loss_is_a_clear_error(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    model.step_hook = lambda module, batch, i: {"los": module.loss(batch)}
    with pytest.raises(ValueError, match="without a 'loss' key.*los"):
        make_trainer(max_epochs=1).fit(model, h.loader(16, 8))


def test_training_step_returning_a_string_is_a_clear_error(h: Any, make_trainer: Any) -> None:
    model = h.Regressor()
    model.step_hook = lambda module, batch, i: "oops"
    with pytest.raises(TypeError, match=r"Regressor.training_step returned a str \(.oops.\); under automatic optimization, return the loss tensor"):
        make_trainer(max_epochs=1).fit(model, h.loader(16, 8))


# --------------------------------------------------------------------------- properties
def test_trainer_device_epoch_and_step_seen_from_the_module(h: Any, make_trainer: Any) -> None:
    seen: list[tuple[Any, ...]] = []

    def step(module: Any, batch: Any, i: int) -> Any:
        seen.append((module.trainer, module.device, module.current_epoch, module.global_step, module.trainer.training))
        return ...

    model = h.Regressor()
    model.step_hook = step
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, h.loader(16, 8))
    assert all(s[0] is trainer for s in seen)
    assert all(s[1] == torch.device("cpu") for s in seen)
    assert [(s[2], s[3]) for s in seen] == [(0, 0), (0, 1), (1, 2), (1, 3)]
    assert all(s[4] for s in seen)
    assert model.current_epoch == 2 and model.global_step == 4
    assert trainer.lightning_module is model and trainer.module is model


def test_module_without_trainer(h: Any) -> None:
    model = h.Regressor()
    with pytest.raises(RuntimeError, match="not attached to an ember.Trainer"):
        model.trainer  # noqa: B018
    assert model.current_epoch == 0 and model.global_step == 0
    assert model.device == torch.device("cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.log("x", 1.0)
        model.log("x", 2.0)
    assert len([w for w in caught if "outside a trainer run" in str(w.message)]) == 1


# --------------------------------------------------------------------------- manual optimization
class _Manual(ember.Module):
    def __init__(self, use_manual_backward: bool = False, with_scheduler: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.use_manual_backward = use_manual_backward
        self.with_scheduler = with_scheduler
        self.steps_seen: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt = self.optimizers()
        assert opt.param_groups is opt.optimizer.param_groups
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        opt.zero_grad()
        if self.use_manual_backward:
            self.manual_backward(loss)
        else:
            loss.backward()
        opt.step()
        self.steps_seen.append(self.global_step)
        self.log("loss", loss)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.05)
        if not self.with_scheduler:
            return opt
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def test_manual_optimization_steps_advance_global_step(h: Any, make_trainer: Any) -> None:
    data = h.loader(32, 8)
    model = _Manual()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, data)
    assert trainer.global_step == 4
    assert model.steps_seen == [1, 2, 3, 4]
    assert h.same(h.params_of(model), _sgd_reference(h, list(data)))


def test_manual_optimization_schedulers_are_the_modules_to_step(h: Any, make_trainer: Any) -> None:
    lrs: list[float] = []

    class WithScheduler(_Manual):
        def training_step(self, batch: Any, batch_idx: int) -> None:
            super().training_step(batch, batch_idx)
            sched = self.lr_schedulers()
            assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
            lrs.append(self.optimizers().param_groups[0]["lr"])
            if batch_idx == 1:
                sched.step()

    model = WithScheduler(with_scheduler=True)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, h.loader(32, 8))
    # the trainer never steps it: only the module's calls at batch 1 of each epoch
    assert lrs == [0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.0125, 0.0125]


def test_manual_optimization_max_steps_counts_optimizer_steps(h: Any, make_trainer: Any) -> None:
    model = _Manual()
    trainer = make_trainer(max_steps=3)
    trainer.fit(model, h.loader(64, 8))
    assert trainer.global_step == 3
    assert model.steps_seen == [1, 2, 3]


def test_manual_backward(h: Any, make_trainer: Any) -> None:
    seen: list[str] = []

    class Hooks(ember.Callback):
        def on_before_backward(self, trainer: Any, module: Any, loss: Any) -> None:
            seen.append("before")

        def on_after_backward(self, trainer: Any, module: Any) -> None:
            seen.append("after")

    data = h.loader(16, 8)
    model = _Manual(use_manual_backward=True)
    trainer = make_trainer(max_epochs=1, callbacks=[Hooks()])
    trainer.fit(model, data)
    assert trainer.global_step == 2
    assert seen == ["before", "after"] * 2
    assert h.same(h.params_of(model), _sgd_reference(h, list(data)))


class _GAN(ember.Module):
    """Two optimizers stepped in turn, each on its own part of the model."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.gen = torch.nn.Linear(4, 4)
        self.disc = torch.nn.Linear(4, 1)
        self.log_steps: list[tuple[int, int]] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        x, _ = batch
        fake = self.gen(torch.randn_like(x))
        d_loss = torch.nn.functional.softplus(-self.disc(x)).mean() + torch.nn.functional.softplus(self.disc(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        before = self.global_step
        g_loss = torch.nn.functional.softplus(-self.disc(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        self.log_steps.append((before, self.global_step))
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss})

    def configure_optimizers(self) -> Any:
        return [torch.optim.Adam(self.gen.parameters(), lr=1e-3), torch.optim.Adam(self.disc.parameters(), lr=1e-3)]


def test_manual_optimization_two_optimizers(h: Any, make_trainer: Any) -> None:
    model = _GAN()
    gen_before = [p.detach().clone() for p in model.gen.parameters()]
    disc_before = [p.detach().clone() for p in model.disc.parameters()]
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, h.loader(24, 8))
    assert len(trainer.optimizers) == 2
    assert trainer.global_step == 6  # each optimizer step counts
    assert model.log_steps == [(1, 2), (3, 4), (5, 6)]
    assert not h.same(h.params_of(model.gen), gen_before)
    assert not h.same(h.params_of(model.disc), disc_before)
    assert {"d_loss", "g_loss"} <= set(trainer.callback_metrics)


# --------------------------------------------------------------------------- hyperparameters
class _HP(ember.Module):
    def __init__(self, width: int = 3, lr: float = 0.1, name: str = "net", backbone: Any = None, mode: str = "all", **extra: Any) -> None:
        super().__init__()
        if mode == "all":
            self.save_hyperparameters()
        elif mode == "subset":
            self.save_hyperparameters("width", "lr")
        elif mode == "ignore":
            self.save_hyperparameters(ignore=["name", "backbone"])
        self.layer = torch.nn.Linear(4, width)
        self.head = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x))

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return torch.nn.functional.mse_loss(self(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.get("lr", 0.1))


def test_save_hyperparameters_all_arguments() -> None:
    m = _HP(width=5, lr=0.2, extra_flag=True)
    assert dict(m.hparams) == {"width": 5, "lr": 0.2, "name": "net", "backbone": None, "mode": "all", "extra_flag": True}
    assert m.hparams.width == 5 and m.hparams["lr"] == 0.2
    m.hparams.lr = 0.5
    assert m.hparams.lr == 0.5
    assert m.hparams_initial.lr == 0.2  # a snapshot, not the live dict
    with pytest.raises(AttributeError, match="No hyperparameter 'depth'"):
        m.hparams.depth  # noqa: B018


def test_save_hyperparameters_subset_and_ignore() -> None:
    assert dict(_HP(width=2, mode="subset").hparams) == {"width": 2, "lr": 0.1}
    assert dict(_HP(width=2, mode="ignore").hparams) == {"width": 2, "lr": 0.1, "mode": "ignore"}
    assert dict(_HP(mode="none").hparams) == {}


def test_save_hyperparameters_unknown_name_is_an_error() -> None:
    class Bad(ember.Module):
        def __init__(self, a: int = 1) -> None:
            super().__init__()
            self.save_hyperparameters("b")

    with pytest.raises(ValueError, match="'b' is not an __init__ argument.*a"):
        Bad()


def test_save_hyperparameters_drops_modules_passed_as_arguments() -> None:
    m = _HP(backbone=torch.nn.Linear(2, 2))
    assert "backbone" not in m.hparams


def test_hyperparameters_reach_the_logger_and_the_checkpoint(h: Any, make_trainer: Any, tmp_path: Any) -> None:
    logger = h.RecordingLogger()
    model = _HP(width=6, lr=0.01)
    trainer = make_trainer(max_epochs=1, logger=logger)
    trainer.fit(model, h.loader(16, 8))
    assert logger.hparams == [{"width": 6, "lr": 0.01, "name": "net", "backbone": None, "mode": "all"}]
    path = tmp_path / "hp.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"] == {"width": 6, "lr": 0.01, "name": "net", "backbone": None, "mode": "all"}


# --------------------------------------------------------------------------- load_from_checkpoint
def test_load_from_checkpoint_rebuilds_from_hyperparameters(h: Any, make_trainer: Any, tmp_path: Any) -> None:
    model = _HP(width=7, lr=0.05)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, h.loader(16, 8))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = _HP.load_from_checkpoint(str(path))
    assert loaded.layer.out_features == 7
    assert loaded.hparams.lr == 0.05
    assert h.same(h.params_of(loaded), h.params_of(model))
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))
    # keyword arguments override the saved hyperparameters
    assert _HP.load_from_checkpoint(str(path), name="other").hparams.name == "other"
    assert _HP.load_from_checkpoint(str(path), map_location="cpu").layer.weight.device == torch.device("cpu")


def test_load_from_checkpoint_calls_on_load_checkpoint(h: Any, make_trainer: Any, tmp_path: Any) -> None:
    class Noting(_HP):
        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["note"] = "hello"

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self.note = checkpoint.get("note")

    trainer = make_trainer(max_epochs=1)
    trainer.fit(Noting(), h.loader(16, 8))
    trainer.save_checkpoint(tmp_path / "n.ckpt")
    assert Noting.load_from_checkpoint(str(tmp_path / "n.ckpt")).note == "hello"


def test_load_from_checkpoint_of_another_model_names_the_file(h: Any, make_trainer: Any, tmp_path: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    trainer.fit(h.Regressor(), h.loader(16, 8))
    path = tmp_path / "regressor.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(CheckpointError, match="regressor.ckpt"):
        _HP.load_from_checkpoint(str(path))
