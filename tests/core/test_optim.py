"""``configure_optimizers``: every accepted form, normalised by
``ember.optim.parse_optimizers``, and the learning rates a real fit ends up
using at each step and epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import ember
from ember.optim import LRSchedulerConfig, OptimizerConfigError, parse_optimizers


def _opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


# --------------------------------------------------------------------------- parsing
def test_parse_single_optimizer_and_lists() -> None:
    a, b = _opt(), _opt()
    assert parse_optimizers(a) == ([a], [])
    assert parse_optimizers([a, b]) == ([a, b], [])
    assert parse_optimizers((a,)) == ([a], [])
    assert parse_optimizers(None) == ([], [])


def test_parse_optimizers_and_schedulers_pair() -> None:
    a = _opt()
    s = torch.optim.lr_scheduler.StepLR(a, 1)
    opts, configs = parse_optimizers(([a], [s]))
    assert opts == [a]
    assert len(configs) == 1 and configs[0].scheduler is s
    assert (configs[0].interval, configs[0].frequency, configs[0].monitor, configs[0].reduce_on_plateau) == ("epoch", 1, None, False)
    # a single scheduler (not in a list) in the second slot
    assert parse_optimizers([[a], s])[1][0].scheduler is s


def test_parse_dict_forms() -> None:
    a = _opt()
    s = torch.optim.lr_scheduler.StepLR(a, 1)
    assert parse_optimizers({"optimizer": a}) == ([a], [])
    assert parse_optimizers({"optimizer": a, "lr_scheduler": None}) == ([a], [])
    _, [c] = parse_optimizers({"optimizer": a, "lr_scheduler": s})
    assert c.scheduler is s and c.interval == "epoch" and c.opt_idx == 0
    _, [c] = parse_optimizers({"optimizer": a, "lr_scheduler": {"scheduler": s, "interval": "step", "frequency": 3, "name": "warm"}})
    assert (c.interval, c.frequency, c.name) == ("step", 3, "warm")
    p = torch.optim.lr_scheduler.ReduceLROnPlateau(a)
    _, [c] = parse_optimizers({"optimizer": a, "lr_scheduler": p, "monitor": "val_loss"})
    assert c.reduce_on_plateau and c.monitor == "val_loss"
    _, [c] = parse_optimizers({"optimizer": a, "lr_scheduler": {"scheduler": p, "monitor": "m", "strict": False}})
    assert c.monitor == "m" and c.strict is False


def test_parse_list_of_dicts_keeps_the_optimizer_index() -> None:
    a, b = _opt(), _opt()
    sb = torch.optim.lr_scheduler.StepLR(b, 1)
    opts, configs = parse_optimizers([{"optimizer": a}, {"optimizer": b, "lr_scheduler": sb}])
    assert opts == [a, b]
    assert [(c.scheduler, c.opt_idx) for c in configs] == [(sb, 1)]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda a, s: "adam", "returned a str"),
        (lambda a, s: 3, "returned a int"),
        (lambda a, s: {"lr_scheduler": s}, 'without an "optimizer" key'),
        (lambda a, s: {"optimizer": a, "scheduler": s}, r"Unknown keys \['scheduler'\]"),
        (lambda a, s: {"optimizer": a, "lr_scheduler": {"scheduler": s, "interval": "batch"}}, 'must be "step" or "epoch", not \'batch\''),
        (lambda a, s: {"optimizer": a, "lr_scheduler": {"scheduler": s, "frequency": 0}}, "positive int, not 0"),
        (lambda a, s: {"optimizer": a, "lr_scheduler": {"scheduler": s, "every": 2}}, r"Unknown lr_scheduler keys \['every'\]"),
        (lambda a, s: {"optimizer": a, "lr_scheduler": {"interval": "step"}}, 'needs a "scheduler" key'),
        (lambda a, s: [a, s], "returned StepLR where an optimizer was expected"),
        (lambda a, s: {"optimizer": a, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(a)}, "ReduceLROnPlateau needs a metric"),
    ],
)
def test_parse_bad_forms_are_clear_errors(make: Callable[..., Any], match: str) -> None:
    a = _opt()
    s = torch.optim.lr_scheduler.StepLR(a, 1)
    with pytest.raises(OptimizerConfigError, match=match):
        parse_optimizers(make(a, s))
    assert issubclass(OptimizerConfigError, ValueError)


# --------------------------------------------------------------------------- through the trainer
class _LRs(ember.Callback):
    """The learning rate in effect at each training batch (before its step)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.epoch_lrs: dict[int, float] = {}

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.lrs.append(round(lr, 10))
        self.epoch_lrs.setdefault(trainer.current_epoch, round(lr, 10))


def _fit_with(
    h: Any, make_trainer: Any, configure: Callable[[Any], Any], *, validation: bool = False, log_val: Any = None, **trainer_kwargs: Any
) -> tuple[Any, _LRs]:
    base = h.Regressor if validation else h.TrainOnly

    class Model(base):  # type: ignore[misc, valid-type]
        def configure_optimizers(self) -> Any:
            return configure(self)

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            if log_val is not None:
                self.log("val_metric", log_val(self))

    if not validation:
        Model.validation_step = ember.Module.validation_step  # type: ignore[method-assign]
    lrs = _LRs()
    trainer = make_trainer(callbacks=[lrs], **trainer_kwargs)
    trainer.fit(Model(), h.loader(32, 8), h.loader(16, 8) if validation else None)
    return trainer, lrs


def test_single_optimizer_is_used(h: Any, make_trainer: Any) -> None:
    made: list[Any] = []

    def configure(m: Any) -> Any:
        made.append(torch.optim.Adam(m.parameters(), lr=0.01))
        return made[0]

    trainer, _ = _fit_with(h, make_trainer, configure, max_epochs=1)
    assert trainer.optimizers == made and trainer.lr_scheduler_configs == []
    assert len(made[0].state) == 2  # Adam stepped both parameters
    assert all(s["step"] == 4 for s in made[0].state.values())


def test_list_with_one_optimizer(h: Any, make_trainer: Any) -> None:
    trainer, lrs = _fit_with(h, make_trainer, lambda m: [torch.optim.SGD(m.parameters(), lr=0.1)], max_epochs=1)
    assert trainer.global_step == 4 and lrs.lrs == [0.1] * 4


def test_optimizers_and_schedulers_pair_steps_per_epoch(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    trainer, lrs = _fit_with(h, make_trainer, configure, max_epochs=3)
    assert lrs.lrs == [0.1] * 4 + [0.05] * 4 + [0.025] * 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0125)


def test_dict_with_a_bare_scheduler_steps_per_epoch(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}

    _, lrs = _fit_with(h, make_trainer, configure, max_epochs=2)
    assert lrs.epoch_lrs == {0: 0.1, 1: 0.05}


def test_step_interval_steps_after_every_optimizer_step(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "interval": "step"}}

    trainer, lrs = _fit_with(h, make_trainer, configure, max_epochs=2)
    assert lrs.lrs == [round(0.1 * 0.5**i, 10) for i in range(8)]
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_step_interval_with_frequency_and_accumulation(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "interval": "step", "frequency": 2},
        }

    # 4 batches per epoch, 2 per optimizer step: steps 1..4 over two epochs; the scheduler steps at global steps 2 and 4
    trainer, lrs = _fit_with(h, make_trainer, configure, max_epochs=2, accumulate_grad_batches=2)
    assert trainer.global_step == 4
    assert lrs.lrs == [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)


def test_epoch_interval_with_frequency(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "interval": "epoch", "frequency": 2},
        }

    _, lrs = _fit_with(h, make_trainer, configure, max_epochs=5)
    assert lrs.epoch_lrs == {0: 0.1, 1: 0.1, 2: 0.05, 3: 0.05, 4: 0.025}


def test_reduce_on_plateau_follows_the_monitored_metric(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_metric"}}

    # the metric never improves after epoch 0: the LR halves after epochs 1, 2, ...
    _, lrs = _fit_with(h, make_trainer, configure, validation=True, log_val=lambda m: 1.0, max_epochs=4)
    assert lrs.epoch_lrs == {0: 0.1, 1: 0.1, 2: 0.05, 3: 0.025}


def test_reduce_on_plateau_keeps_the_lr_while_the_metric_improves(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": plateau, "monitor": "val_metric"}

    _, lrs = _fit_with(h, make_trainer, configure, validation=True, log_val=lambda m: 10.0 - m.current_epoch, max_epochs=3)
    assert lrs.epoch_lrs == {0: 0.1, 1: 0.1, 2: 0.1}


def test_reduce_on_plateau_missing_metric_is_a_clear_error(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt), "monitor": "val_metrc"}}

    with pytest.raises(KeyError, match="monitors 'val_metrc'.*Did you mean 'val_metric'"):
        _fit_with(h, make_trainer, configure, validation=True, log_val=lambda m: 1.0, max_epochs=1)


def test_reduce_on_plateau_missing_metric_not_strict_skips(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "absent", "strict": False}}

    trainer, lrs = _fit_with(h, make_trainer, configure, max_epochs=3)
    assert lrs.epoch_lrs == {0: 0.1, 1: 0.1, 2: 0.1} and trainer.global_step == 12


def test_lr_scheduler_step_override_is_used(h: Any, make_trainer: Any) -> None:
    calls: list[Any] = []

    class Custom(h.TrainOnly):  # type: ignore[misc, name-defined]
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), "interval": "step"}}

        def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
            calls.append((self.global_step, metric))

    trainer = make_trainer(max_epochs=1)
    trainer.fit(Custom(), h.loader(24, 8))
    assert calls == [(1, None), (2, None), (3, None)]
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.1  # the override chose not to step


def test_optimizer_step_override_gets_a_working_closure(h: Any, make_trainer: Any) -> None:
    calls: list[tuple[int, int]] = []

    class Warmup(h.TrainOnly):  # type: ignore[misc, name-defined]
        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            calls.append((epoch, batch_idx))
            for group in optimizer.param_groups:
                group["lr"] = 0.05 * min(1.0, (self.global_step + 1) / 2)
            optimizer.step(closure=optimizer_closure)

    model = Warmup()
    trainer = make_trainer(max_epochs=1, callbacks=[lrs := _LRs()])
    trainer.fit(model, h.loader(32, 8))
    assert calls == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert trainer.global_step == 4
    assert lrs.lrs == [0.05, 0.025, 0.05, 0.05]  # set inside the previous step
    assert len(model.train_batches) == 4  # the closure ran training_step once per batch


def test_several_optimizers_with_automatic_optimization_is_a_clear_error(h: Any, make_trainer: Any) -> None:
    class Two(h.TrainOnly):  # type: ignore[misc, name-defined]
        def configure_optimizers(self) -> Any:
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters())]

    with pytest.raises(ValueError, match="returned 2 optimizers.*automatic_optimization = False"):
        make_trainer(max_epochs=1).fit(Two(), h.loader(16, 8))


def test_no_optimizer_with_automatic_optimization_is_a_clear_error(h: Any, make_trainer: Any) -> None:
    class NoOpt(h.TrainOnly):  # type: ignore[misc, name-defined]
        def configure_optimizers(self) -> Any:
            return None

    with pytest.raises(ValueError, match="NoOpt.configure_optimizers\\(\\) returned no optimizer"):
        make_trainer(max_epochs=1).fit(NoOpt(), h.loader(16, 8))


def test_bad_form_through_fit(h: Any, make_trainer: Any) -> None:
    class Bad(h.TrainOnly):  # type: ignore[misc, name-defined]
        def configure_optimizers(self) -> Any:
            return {"optimizer": torch.optim.SGD(self.parameters(), lr=0.1), "lr_schedulers": None}

    with pytest.raises(OptimizerConfigError, match="Unknown keys \\['lr_schedulers'\\]"):
        make_trainer(max_epochs=1).fit(Bad(), h.loader(16, 8))


def test_scheduler_config_is_exposed(h: Any, make_trainer: Any) -> None:
    def configure(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "interval": "step", "name": "my_lr"},
        }

    trainer, _ = _fit_with(h, make_trainer, configure, max_epochs=1)
    [config] = trainer.lr_scheduler_configs
    assert isinstance(config, LRSchedulerConfig)
    assert (config.interval, config.frequency, config.name, config.opt_idx) == ("step", 1, "my_lr", 0)
    assert config.scheduler.optimizer is trainer.optimizers[0]


def test_optimizer_wrappers_forward_to_the_wrapped_optimizer_and_pickle() -> None:
    """``self.optimizers()``'s handle and DeepSpeed's optimizer share one
    forwarding base: param groups, state and any other attribute are the
    wrapped optimizer's, and a wrapper survives pickling."""
    import pickle

    from ember.loops.optimization import OptimizerHandle
    from ember.optim import OptimizerWrapper

    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    param.grad = torch.ones(2)
    opt.step()
    handle = OptimizerHandle(None, opt)  # type: ignore[arg-type]  (no trainer needed to read through it)
    assert isinstance(handle, OptimizerWrapper)
    assert handle.param_groups is opt.param_groups and handle.state is opt.state and handle.defaults is opt.defaults
    copy = pickle.loads(pickle.dumps(handle))
    assert copy.param_groups[0]["lr"] == 0.1 and torch.equal(copy.state[copy.param_groups[0]["params"][0]]["momentum_buffer"], torch.ones(2))
