"""``16-mixed`` and ``bf16-mixed``: autocast, loss scaling, checkpoints, real fits.

The CPU tests run everywhere. With the installed torch, CPU autocast supports
float16 and ``GradScaler("cpu")`` exists, so ``16-mixed`` and its scaler are
exercised on CPU too; the ``gpu`` tests repeat the important ones on CUDA.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ember
from ember.plugins.precision import mixed
from ember.plugins.precision.mixed import MixedPrecision, bf16_mixed_precision, cpu_float16_supported, half_mixed_precision
from ember.testing import quiet_trainer

DIGITS = Path(__file__).resolve().parents[3] / "examples" / "digits"

# 16-mixed warns once per run on CPU that it is slow there; one test checks that.
pytestmark = pytest.mark.filterwarnings("ignore:precision='16-mixed' runs on CPU:UserWarning")
needs_cpu_fp16 = pytest.mark.skipif(not cpu_float16_supported(), reason="this torch has no float16 CPU autocast / GradScaler('cpu')")


@pytest.fixture
def digits(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(DIGITS))
    for name in ("model", "data"):
        sys.modules.pop(name, None)
    import data
    import model

    # One intra-op thread: these small convolutions gain nothing from more,
    # and a busy CI machine makes several threads spin against each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield model.DigitsCNN, data.DigitsDataModule
    finally:
        torch.set_num_threads(threads)
        for name in ("model", "data"):
            sys.modules.pop(name, None)


def fit_digits(tmp_path: Path, digits: Any, precision: str, epochs: int = 3, **model_kwargs: Any) -> tuple[Any, ember.Trainer, float]:
    DigitsCNN, DigitsDataModule = digits
    ember.seed_everything(0)
    model_ = DigitsCNN(**model_kwargs)
    trainer = ember.Trainer(
        max_epochs=epochs,
        precision=precision,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model_, DigitsDataModule())
    return model_, trainer, float(trainer.callback_metrics["val_acc"])


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "given,name,dtype,scales",
    [
        ("bf16-mixed", "bf16-mixed", torch.bfloat16, False),
        ("bf16", "bf16-mixed", torch.bfloat16, False),
        ("16-mixed", "16-mixed", torch.float16, True),
        ("16", "16-mixed", torch.float16, True),
        (16, "16-mixed", torch.float16, True),
    ],
)
def test_names_and_aliases_resolve(make_trainer: Any, given: Any, name: str, dtype: torch.dtype, scales: bool) -> None:
    trainer = make_trainer(precision=given)
    precision = trainer.strategy.precision
    assert trainer.precision == name and isinstance(precision, MixedPrecision)
    assert precision.dtype == dtype and precision.scales_gradients is scales
    assert precision.converts_input is False


def test_only_half_dtypes() -> None:
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        MixedPrecision(torch.float32)
    with pytest.raises(ValueError, match="only used with float16"):
        MixedPrecision(torch.bfloat16, scaler=torch.amp.GradScaler("cpu"))


# --------------------------------------------------------------------------- bf16-mixed, unit


def test_bf16_context_autocasts_on_the_modules_device_and_leaves_parameters_alone() -> None:
    p = bf16_mixed_precision()
    layer = torch.nn.Linear(3, 2)
    assert p.convert_module(layer) is layer
    assert layer.weight.dtype == torch.float32
    batch = (torch.randn(4, 3), torch.arange(4))
    assert p.convert_input(batch) is batch
    with p.forward_context():
        out = layer(batch[0])
    assert p.device_type == "cpu"
    assert out.dtype == torch.bfloat16
    assert layer(batch[0]).dtype == torch.float32  # only inside the context
    with p.forward_context(), p.forward_context():  # nests
        assert torch.is_autocast_enabled("cpu")


def test_bf16_backward_and_step_do_not_scale() -> None:
    p = bf16_mixed_precision()
    w = torch.nn.Parameter(torch.tensor([2.0]))
    p.convert_module(torch.nn.Linear(1, 1))
    p.backward((w * 3).sum(), torch.nn.Linear(1, 1))
    assert w.grad.item() == 3.0 and p.scaler is None
    opt = torch.optim.SGD([w], lr=0.5)
    calls: list[int] = []
    p.unscale_gradients(opt)
    p.optimizer_step(opt, lambda: calls.append(1))
    assert calls == [1] and w.item() == pytest.approx(0.5)
    assert p.state_dict() == {}


def test_explicit_device_type_wins_over_the_module() -> None:
    p = MixedPrecision(torch.bfloat16, device_type="cpu")
    p.convert_module(torch.nn.Linear(1, 1))
    assert p.device_type == "cpu"
    q = bf16_mixed_precision()
    q.device_type = "cpu"
    q.convert_module(torch.nn.Linear(1, 1))
    assert q.device_type == "cpu"


# --------------------------------------------------------------------------- bf16-mixed, real fits


@pytest.mark.slow
def test_bf16_mixed_trains_digits_like_32_true(tmp_path: Path, digits: Any) -> None:
    DigitsCNN, _ = digits
    seen: dict[str, set[torch.dtype]] = {"train": set(), "val": set(), "loss": set()}

    class Probe(DigitsCNN):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            seen["train"].add(self.features(x).dtype)
            loss = super().training_step(batch, batch_idx)
            seen["loss"].add(loss.dtype)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            seen["val"].add(self(batch[0]).dtype)
            super().validation_step(batch, batch_idx)

    _, _, acc32 = fit_digits(tmp_path / "32", digits, "32-true")
    model_, trainer, acc_bf16 = fit_digits(tmp_path / "bf16", (Probe, digits[1]), "bf16-mixed")
    assert acc32 >= 0.95 and acc_bf16 >= 0.95, (acc32, acc_bf16)
    assert abs(acc32 - acc_bf16) < 0.04
    # the forward pass really ran in bfloat16, the weights stayed float32
    assert seen["train"] == {torch.bfloat16} and seen["val"] == {torch.bfloat16}
    assert seen["loss"] == {torch.float32}  # autocast computes cross_entropy in float32
    assert all(p.dtype == torch.float32 for p in model_.parameters())
    assert trainer.strategy.precision.state_dict() == {}


# --------------------------------------------------------------------------- 16-mixed, unit (CPU GradScaler)


@needs_cpu_fp16
def test_16_mixed_on_cpu_scales_unscales_and_steps() -> None:
    p = half_mixed_precision()
    layer = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(layer.weight, 2.0)
    p.convert_module(layer)
    with p.forward_context():
        out = layer(torch.ones(1, 1))
    assert out.dtype == torch.float16
    # 1/16: the float16 gradient of ``out`` (scale/16) stays below float16's maximum
    loss = out.float().sum() / 16
    p.backward(loss, layer)
    scale = p.scaler.get_scale()
    assert scale == 2.0**16
    assert layer.weight.grad.item() == pytest.approx(scale / 16)  # scaled
    opt = torch.optim.SGD(layer.parameters(), lr=8.0)
    p.unscale_gradients(opt)
    assert layer.weight.grad.item() == pytest.approx(1 / 16)  # unscaled before clipping / hooks
    p.optimizer_step(opt)
    assert layer.weight.item() == pytest.approx(1.5)


@needs_cpu_fp16
def test_16_mixed_runs_the_closure_before_stepping_and_returns_its_value() -> None:
    p = half_mixed_precision()
    w = torch.nn.Parameter(torch.tensor([1.0]))
    module = torch.nn.Module()
    module.w = w
    p.convert_module(module)
    opt = torch.optim.SGD([w], lr=0.1)
    order: list[str] = []

    def closure() -> torch.Tensor:
        order.append("closure")
        opt.zero_grad()
        loss = (w * 4).sum()
        p.backward(loss, module)
        p.unscale_gradients(opt)
        return loss

    result = p.optimizer_step(opt, closure)
    assert order == ["closure"] and result.item() == 4.0
    assert w.item() == pytest.approx(0.6)


@needs_cpu_fp16
def test_16_mixed_skips_a_step_whose_gradients_overflow_and_lowers_the_scale() -> None:
    p = half_mixed_precision()
    w = torch.nn.Parameter(torch.tensor([1.0]))
    module = torch.nn.Module()
    module.w = w
    p.convert_module(module)
    opt = torch.optim.SGD([w], lr=0.1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (w * math.inf).sum()
        p.backward(loss, module)
        return loss

    p.optimizer_step(opt, closure)
    assert w.item() == 1.0  # the step was skipped
    assert p.scaler.get_scale() == 2.0**15  # and the scale halved


@needs_cpu_fp16
def test_16_mixed_on_cpu_warns_once_that_bf16_is_the_cpu_choice(make_trainer: Any, loaders: Any) -> None:
    train, _ = loaders
    trainer = make_trainer(max_epochs=1, precision="16-mixed")
    with pytest.warns(UserWarning, match="16-mixed' runs on CPU.*bf16-mixed") as record:
        trainer.fit(ScaledProbe(), train)
        trainer.validate(ScaledProbe(), train, verbose=False)
    assert sum("16-mixed' runs on CPU" in str(w.message) for w in record) == 1


def test_16_mixed_refuses_lbfgs() -> None:
    p = MixedPrecision(torch.float16, device_type="cpu") if cpu_float16_supported() else None
    if p is None:
        pytest.skip("16-mixed is refused on this CPU torch altogether")
    opt = torch.optim.LBFGS([torch.nn.Parameter(torch.ones(1))])
    with pytest.raises(TypeError, match="LBFGS"):
        p.optimizer_step(opt, lambda: torch.zeros(()))


def test_16_mixed_on_cpu_without_support_suggests_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mixed, "cpu_float16_supported", lambda: False)
    p = half_mixed_precision()
    p.convert_module(torch.nn.Linear(1, 1))
    with pytest.raises(RuntimeError, match="16-mixed.*CPU.*bf16-mixed"):
        p.forward_context()
    bf16 = bf16_mixed_precision()  # bf16-mixed is unaffected
    bf16.convert_module(torch.nn.Linear(1, 1))
    bf16.forward_context()


def test_scaler_state_given_before_the_scaler_exists_is_kept_and_applied() -> None:
    p = half_mixed_precision()
    state = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 7, "_growth_tracker": 3}
    p.load_state_dict({"scaler": state})
    assert p.state_dict() == {"scaler": state}
    if not cpu_float16_supported():
        return
    w = torch.nn.Parameter(torch.tensor([1.0]))
    p.backward((w * 1).sum(), torch.nn.Linear(1, 1))
    assert p.scaler.get_scale() == 1024.0 and p.scaler.get_growth_interval() == 7
    assert w.grad.item() == 1024.0


def test_bf16_mixed_ignores_scaler_state_with_a_warning() -> None:
    p = bf16_mixed_precision()
    with pytest.warns(UserWarning, match="GradScaler"):
        p.load_state_dict({"scaler": {"scale": 8.0}})
    assert p.state_dict() == {}
    p.load_state_dict({})


# --------------------------------------------------------------------------- 16-mixed, real fits on CPU


def finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


class ScaledProbe(ember.Module):
    """Linear regression that records the gradient norm the hooks see."""

    def __init__(self, optimizer: str = "sgd") -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.optimizer = optimizer
        self.seen_norms: list[float] = []
        self.out_dtypes: set[torch.dtype] = set()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.layer(x)
        self.out_dtypes.add(out.dtype)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x).float(), y))

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        grads = [p.grad.norm() for p in self.parameters() if p.grad is not None]
        self.seen_norms.append(float(torch.stack(grads).norm()))

    def configure_optimizers(self) -> Any:
        if self.optimizer == "lbfgs":
            return torch.optim.LBFGS(self.parameters(), lr=0.1)
        return torch.optim.SGD(self.parameters(), lr=0.05)


@needs_cpu_fp16
def test_16_mixed_fit_on_cpu_unscales_before_hooks_and_clipping(make_trainer: Any, loaders: Any) -> None:
    train, val = loaders
    model_ = ScaledProbe()
    trainer = make_trainer(max_epochs=8, precision="16-mixed", gradient_clip_val=5.0)
    [before] = trainer.validate(model_, val, verbose=False)
    trainer.fit(model_, train, val)
    [after] = trainer.validate(model_, val, verbose=False)
    assert after["val_loss"] < before["val_loss"] * 0.5
    assert model_.out_dtypes == {torch.float16}
    assert all(p.dtype == torch.float32 for p in model_.parameters())
    # unscaled gradients (a scaled one would be thousands of times larger), clipped
    # at 5; the first steps overflow (inf gradients, step skipped) until the scale drops
    assert finite(model_.seen_norms) and max(finite(model_.seen_norms)) < 1000
    precision = trainer.strategy.precision
    assert precision.scaler is not None and precision.device_type == "cpu"
    assert trainer.global_step == 32


@needs_cpu_fp16
def test_16_mixed_with_accumulation_and_manual_optimization(make_trainer: Any, loaders: Any) -> None:
    train, _ = loaders
    model_ = ScaledProbe()
    trainer = make_trainer(max_epochs=2, precision="16-mixed", accumulate_grad_batches=2)
    trainer.fit(model_, train)
    assert trainer.global_step == 4 and len(model_.seen_norms) == 4

    class Manual(ScaledProbe):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> None:
            opt = self.optimizers()
            opt.zero_grad()
            loss = super().training_step(batch, batch_idx)
            self.manual_backward(loss)
            opt.step()

    manual = Manual()
    trainer = make_trainer(max_epochs=2, precision="16-mixed")
    trainer.fit(manual, train)
    assert trainer.global_step == 8 and len(manual.seen_norms) == 8
    assert finite(manual.seen_norms) and max(finite(manual.seen_norms)) < 1000


@needs_cpu_fp16
def test_16_mixed_fit_with_lbfgs_is_refused_clearly(make_trainer: Any, loaders: Any) -> None:
    train, _ = loaders
    trainer = make_trainer(max_epochs=1, precision="16-mixed")
    with pytest.raises(TypeError, match="16-mixed.*LBFGS"):
        trainer.fit(ScaledProbe("lbfgs"), train)


@needs_cpu_fp16
def test_scaler_state_round_trips_through_a_real_checkpoint(make_trainer: Any, loaders: Any, tmp_path: Path) -> None:
    train, _ = loaders
    trainer = make_trainer(max_epochs=1, precision="16-mixed")
    trainer.fit(ScaledProbe(), train)
    scaler = trainer.strategy.precision.scaler
    scaler.update(new_scale=512.0)  # a value the defaults would never hold
    path = tmp_path / "mixed.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["precision"]["scaler"]
    assert saved["scale"] == 512.0 and saved["growth_interval"] == 2000

    resumed = make_trainer(max_epochs=2, precision="16-mixed")
    model_ = ScaledProbe()
    resumed.fit(model_, train, ckpt_path=str(path))
    assert resumed.global_step == 8
    # restored, then used: 512 at most (it halves on overflow, grows only after 2000 steps)
    assert resumed.strategy.precision.scaler.get_scale() == 512.0
    assert resumed.strategy.precision.state_dict()["scaler"]["_growth_tracker"] == saved["_growth_tracker"] + 4


def test_bf16_mixed_checkpoint_round_trip(make_trainer: Any, loaders: Any, tmp_path: Path) -> None:
    train, _ = loaders
    trainer = make_trainer(max_epochs=1, precision="bf16-mixed")
    trainer.fit(ScaledProbe(), train)
    path = tmp_path / "bf16.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["precision"] == {}
    resumed = make_trainer(max_epochs=2, precision="bf16-mixed")
    model_ = ScaledProbe()
    resumed.fit(model_, train, ckpt_path=str(path))
    assert resumed.global_step == 8 and model_.out_dtypes == {torch.bfloat16}


# --------------------------------------------------------------------------- GPU only


def gpu_trainer(tmp_path: Path, **kwargs: Any) -> ember.Trainer:
    defaults = {"accelerator": "cuda", "devices": 1, "num_sanity_val_steps": 0, "max_epochs": None, "enable_fault_tolerance": None}
    return quiet_trainer(tmp_path, **{**defaults, **kwargs})


@pytest.mark.parametrize("precision,dtype", [("16-mixed", torch.float16), ("bf16-mixed", torch.bfloat16)])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_fit_on_cuda(tmp_path: Path, loaders: Any, precision: str, dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    train, val = loaders
    model_ = ScaledProbe()
    trainer = gpu_trainer(tmp_path, max_epochs=8, precision=precision, gradient_clip_val=5.0)
    [before] = trainer.validate(model_, val, verbose=False)
    trainer.fit(model_, train, val)
    [after] = trainer.validate(model_, val, verbose=False)
    assert after["val_loss"] < before["val_loss"] * 0.5
    assert model_.out_dtypes == {dtype}
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in model_.parameters())
    p = trainer.strategy.precision
    assert p.device_type == "cuda"
    if dtype == torch.float16:
        assert p.scaler is not None and p.scaler.is_enabled()
        assert finite(model_.seen_norms) and max(finite(model_.seen_norms)) < 1000
    else:
        assert p.scaler is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_16_mixed_scaler_checkpoint_on_cuda(tmp_path: Path, loaders: Any) -> None:
    train, _ = loaders
    trainer = gpu_trainer(tmp_path, max_epochs=1, precision="16-mixed")
    trainer.fit(ScaledProbe(), train)
    trainer.strategy.precision.scaler.update(new_scale=256.0)
    path = tmp_path / "cuda.ckpt"
    trainer.save_checkpoint(path)
    resumed = gpu_trainer(tmp_path, max_epochs=2, precision="16-mixed")
    resumed.fit(ScaledProbe(), train, ckpt_path=str(path))
    assert resumed.strategy.precision.scaler.get_scale() == 256.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_mixed_trains_digits_on_cuda(tmp_path: Path, digits: Any) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    DigitsCNN, DigitsDataModule = digits
    ember.seed_everything(0)
    model_ = DigitsCNN()
    trainer = gpu_trainer(tmp_path, max_epochs=3, precision="bf16-mixed")
    trainer.fit(model_, DigitsDataModule())
    assert float(trainer.callback_metrics["val_acc"]) >= 0.95
