"""``Compile(optimizer_step=True)``, ``Compile(training_step=True)`` and
compiled modules that travel to other processes (pickled).

Real fits through dynamo with the ``eager`` backend (dynamo captures the
graphs and runs them op by op: bit-exact where the optimizer's compiled
code does the same arithmetic, as SGD's does) or ``aot_eager`` (AOT
autograd, no codegen). Each is compared with the same fit in eager mode.
The inductor variants are in the slow tier at the end.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from typing import Any

import pytest
import torch
import torch._dynamo

import ember
from ember.compile import CompiledOptimizerStep, accept
from ember.plugins.callbacks.compile import Compile

H: Any = None  # the ``h`` helpers of tests/core/conftest.py


@pytest.fixture(autouse=True)
def _helpers(h: Any) -> None:
    global H
    H = h


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


class Plain(ember.Module):
    """A 4-8-1 regression net whose ``training_step`` holds only tensor work
    and one ``self.log`` (the test helpers' Regressor also records its batches
    in a list, which would make a compiled training_step recompile every step)."""

    def __init__(self, optimizer: str = "sgd", schedule: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.optimizer_name = optimizer
        self.schedule = schedule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "lbfgs":
            return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)
        if self.optimizer_name == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(self.parameters(), lr=0.02, weight_decay=0.01)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        if not self.schedule:
            return opt
        # Halves the learning rate every step: a compiled update that baked the lr in would drift at once.
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), "interval": "step"}}


def _fit(root: Any, model: Any, callbacks: list[Any] | None = None, epochs: int = 2, ckpt_path: str | None = None, **kwargs: Any) -> Any:
    trainer = H.quiet_trainer(root, max_epochs=epochs, callbacks=callbacks or [], **kwargs)
    trainer.fit(model, H.loader(40, batch_size=8), H.loader(16, batch_size=8, seed=1), ckpt_path=ckpt_path)
    return trainer


def _max_diff(a: Any, b: Any) -> float:
    return max((x - y).abs().max().item() for x, y in zip(H.params_of(a), H.params_of(b), strict=True))


# --------------------------------------------------------------------------- optimizer_step=True


@pytest.mark.parametrize(
    "opts",
    [{}, {"accumulate_grad_batches": 2, "gradient_clip_val": 0.05}],
    ids=["plain", "accumulation+clipping"],
)
def test_compiled_sgd_step_is_bit_exact_and_put_back(tmp_path: Any, opts: dict[str, Any]) -> None:
    eager = Plain()
    _fit(tmp_path / "e", eager, **opts)
    model = Plain()
    callback = Compile(backend="eager", optimizer_step=True, verbose=False)
    seen: list[Any] = []

    class Peek(ember.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            seen.append(trainer.optimizers[0].__dict__.get("step"))

    trainer = _fit(tmp_path / "c", model, [callback, Peek()], **opts)
    assert all(isinstance(s, CompiledOptimizerStep) for s in seen) and len(seen) == 2  # it was the compiled step that ran
    assert _max_diff(model, eager) == 0.0
    assert _max_diff(model, Plain()) > 0  # it trained
    assert "step" not in trainer.optimizers[0].__dict__  # the class's step is back after fit
    assert callback.stats is not None and callback.stats.frames >= 2  # forward and the update


def test_compiled_adamw_step_follows_a_per_step_lr_schedule(tmp_path: Any) -> None:
    """AdamW's compiled update computes its bias corrections in float32
    tensors (eager: Python floats), so agreement is to float32 rounding."""
    eager = Plain("adamw", schedule=True)
    trainer_e = _fit(tmp_path / "e", eager)
    model = Plain("adamw", schedule=True)
    callback = Compile(backend="aot_eager", optimizer_step=True, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(tmp_path / "c", model, [callback])
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # the scheduler still sees its step wrapper
    assert getattr(trainer.optimizers[0].step, "_wrapped_by_lr_sched", False)  # and has it back after fit
    assert trainer.optimizers[0].param_groups[0]["lr"] == trainer_e.optimizers[0].param_groups[0]["lr"] < 1e-3
    assert _max_diff(model, eager) < 1e-5
    assert callback.stats is not None and callback.stats.recompilations <= 2  # the changing lr is no constant of the graph


@pytest.mark.filterwarnings("ignore:precision='16-mixed' runs on CPU")
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_compiled_step_with_mixed_precision(tmp_path: Any, precision: str) -> None:
    """16-mixed steps through GradScaler.step, which calls the compiled update
    only when the gradients are finite."""
    eager = Plain("adamw")
    _fit(tmp_path / "e", eager, precision=precision)
    model = Plain("adamw")
    trainer = _fit(tmp_path / "c", model, [Compile(backend="aot_eager", optimizer_step=True, verbose=False)], precision=precision)
    assert (getattr(trainer.strategy.precision, "scaler", None) is not None) == (precision == "16-mixed")
    assert _max_diff(model, eager) < 2e-5
    assert _max_diff(model, Plain("adamw")) > 1e-2


def test_compiled_step_checkpoint_resumes_either_way(tmp_path: Any) -> None:
    """Two epochs in one go equal one epoch, a checkpoint, and a second epoch,
    whether the step is compiled in the first run, the second or both."""
    reference = Plain("adamw")
    _fit(tmp_path / "ref", reference, epochs=2)

    def one_epoch(compiled: bool) -> str:
        path = str(tmp_path / f"one-{compiled}.ckpt")
        callbacks = [Compile(backend="aot_eager", optimizer_step=True, verbose=False)] if compiled else []
        trainer = _fit(tmp_path / f"a{compiled}", Plain("adamw"), callbacks, epochs=1)
        trainer.save_checkpoint(path)
        state = torch.load(path, weights_only=True)
        assert state["optimizer_states"][0]["state"], "the optimizer state (Adam's moments) is in the checkpoint"
        return path

    for first, second in [(True, False), (False, True), (True, True)]:
        path = one_epoch(first)
        resumed = Plain("adamw")
        callbacks = [Compile(backend="aot_eager", optimizer_step=True, verbose=False)] if second else []
        _fit(tmp_path / f"b{first}{second}", resumed, callbacks, epochs=2, ckpt_path=path)
        assert _max_diff(resumed, reference) < 1e-5, (first, second)


def test_manual_optimization_steps_through_the_compiled_update(tmp_path: Any) -> None:
    class Manual(Plain):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            opt = self.optimizers()
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            self.clip_gradients(opt, gradient_clip_val=0.05)
            opt.step()
            return loss

    eager = Manual()
    _fit(tmp_path / "e", eager)
    model = Manual()
    callback = Compile(backend="eager", optimizer_step=True, verbose=False)
    trainer = _fit(tmp_path / "c", model, [callback])
    assert trainer.global_step == 10
    assert _max_diff(model, eager) == 0.0


def test_lbfgs_is_left_eager(tmp_path: Any) -> None:
    """LBFGS calls its closure several times per step: its step is not compiled."""
    eager = Plain("lbfgs")
    _fit(tmp_path / "e", eager, epochs=1)
    model = Plain("lbfgs")
    seen: list[Any] = []

    class Peek(ember.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            seen.append(trainer.optimizers[0].__dict__.get("step"))

    _fit(tmp_path / "c", model, [Compile(backend="eager", optimizer_step=True, verbose=False), Peek()], epochs=1)
    assert seen == [None]
    assert _max_diff(model, eager) == 0.0


# --------------------------------------------------------------------------- training_step=True


def test_compiled_training_step_logs_trains_and_is_put_back(tmp_path: Any) -> None:
    eager = Plain()
    trainer_e = _fit(tmp_path / "e", eager)
    model = Plain()
    callback = Compile(backend="eager", training_step=True, optimizer_step=True, verbose=False)
    trainer = _fit(tmp_path / "c", model, [callback])
    assert _max_diff(model, eager) == 0.0
    assert torch.equal(trainer.callback_metrics["train_loss"], trainer_e.callback_metrics["train_loss"])  # self.log still works
    assert "val_loss" in trainer.callback_metrics
    assert "training_step" not in model.__dict__  # the class's training_step is back
    stats = callback.stats
    assert stats is not None and stats.frames >= 2 and stats.recompilations <= 4, stats.report()


def test_repr_names_the_opt_ins() -> None:
    assert "optimizer_step=True" in repr(Compile(optimizer_step=True))
    assert "training_step" not in repr(Compile())


# --------------------------------------------------------------------------- a compiled module that is pickled


def test_a_pickled_or_copied_compiled_module_stays_compiled(tmp_path: Any) -> None:
    """What ddp_spawn does to start its workers: pickle the module. torch drops
    the compiled call when pickling; the copy gets it back from the same
    dynamo context, and trains through dynamo."""
    model = accept(torch.compile(Plain(), backend="eager"))
    for copied in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert copied._compiled_call_impl is not None
        torch._dynamo.reset()  # no cached frames: the fit must compile to go through dynamo
        _fit(tmp_path / "copy", copied, epochs=1)
        assert torch._dynamo.utils.get_compilation_metrics()
        assert _max_diff(copied, Plain()) > 0
    plain = Plain()
    assert pickle.loads(pickle.dumps(plain))._compiled_call_impl is None  # a plain module stays plain


def test_a_backend_that_does_not_pickle_leaves_the_copy_plain_with_a_warning() -> None:
    def local_backend(gm: Any, example_inputs: Any) -> Any:
        return gm.forward

    model = accept(torch.compile(Plain(), backend=local_backend))
    with pytest.warns(UserWarning, match="runs uncompiled: its torch.compile backend does not pickle"):
        copied = pickle.loads(pickle.dumps(model))
    assert copied._compiled_call_impl is None
    assert torch.equal(copied(torch.ones(2, 4)), model(torch.ones(2, 4)))


# --------------------------------------------------------------------------- inductor (slow)


@pytest.mark.slow
def test_inductor_compiled_step_and_training_step(tmp_path: Any) -> None:
    """The real compiler (C++ code generation on CPU) for the update and the
    whole training_step: AdamW with a per-step schedule, clipping and a
    checkpoint resumed into a compiled run, against eager."""
    opts = {"gradient_clip_val": 0.5}
    reference = Plain("adamw", schedule=True)
    _fit(tmp_path / "ref", reference, epochs=2, **opts)
    first = Plain("adamw", schedule=True)
    trainer = _fit(tmp_path / "a", first, [Compile(optimizer_step=True, training_step=True, verbose=False)], epochs=1, **opts)
    path = str(tmp_path / "one.ckpt")
    trainer.save_checkpoint(path)
    resumed = Plain("adamw", schedule=True)
    callback = Compile(optimizer_step=True, verbose=False)
    _fit(tmp_path / "b", resumed, [callback], epochs=2, ckpt_path=path, **opts)
    assert _max_diff(resumed, reference) < 1e-4
    assert callback.stats is not None and callback.stats.frames >= 2


def test_lightning_imported_alongside_does_not_make_the_module_unpicklable() -> None:
    # Importing Lightning wraps torch.compile to store its arguments on the
    # module (the local backend included), which pickle cannot copy.
    pytest.importorskip("pytorch_lightning")

    def local_backend(gm: Any, example_inputs: Any) -> Any:
        return gm.forward

    model = accept(torch.compile(Plain(), backend=local_backend))
    with pytest.warns(UserWarning, match="does not pickle"):
        copied = pickle.loads(pickle.dumps(model))
    assert copied._compiled_call_impl is None
