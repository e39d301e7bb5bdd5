"""``bf16-true`` and ``16-true``: parameters and floating inputs in a half-width dtype."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ember
from ember.plugins.precision.half import HalfTruePrecision, bf16_true_precision, half_true_precision

DIGITS = Path(__file__).resolve().parents[3] / "examples" / "digits"


@pytest.mark.parametrize("name,dtype", [("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
def test_converts_modules_and_floating_inputs_only(make_trainer: Any, name: str, dtype: torch.dtype) -> None:
    p = make_trainer(precision=name).strategy.precision
    assert isinstance(p, HalfTruePrecision) and (p.name, p.dtype) == (name, dtype)
    assert p.converts_input is True and p.scales_gradients is False
    module = p.convert_module(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)))
    assert {t.dtype for t in module.parameters()} == {dtype}
    assert module[1].running_mean.dtype == dtype and module[1].num_batches_tracked.dtype == torch.int64
    out = p.convert_input({"x": torch.zeros(3, 2), "ids": torch.arange(3), "pair": (torch.ones(1, dtype=torch.float64), "s")})
    assert out["x"].dtype == dtype and out["pair"][0].dtype == dtype
    assert out["ids"].dtype == torch.int64 and out["pair"][1] == "s"
    assert p.state_dict() == {}


def test_only_half_dtypes() -> None:
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        HalfTruePrecision(torch.float32)
    assert bf16_true_precision().name == "bf16-true" and half_true_precision().name == "16-true"


@pytest.mark.slow
def test_bf16_true_trains_digits_in_bfloat16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DIGITS))
    for name in ("model", "data"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from data import DigitsDataModule
    from model import DigitsCNN

    seen: set[torch.dtype] = set()

    class Probe(DigitsCNN):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.add(batch[0].dtype)
            seen.add(self.features(batch[0]).dtype)
            return super().training_step(batch, batch_idx)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions; several threads only spin on a busy machine
    try:
        ember.seed_everything(0)
        model_ = Probe()
        trainer = ember.Trainer(
            max_epochs=3,
            precision="bf16-true",
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
    finally:
        torch.set_num_threads(threads)
        for name in ("model", "data"):
            sys.modules.pop(name, None)
    assert all(p.dtype == torch.bfloat16 for p in model_.parameters())
    assert seen == {torch.bfloat16}
    assert float(trainer.callback_metrics["val_acc"]) >= 0.9


@pytest.mark.parametrize("precision,dtype", [("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
def test_fit_on_cpu_learns(make_trainer: Any, regressor: Any, loaders: Any, precision: str, dtype: torch.dtype) -> None:
    # 16-true runs on CPU with this torch (the layers have float16 CPU kernels);
    # plain SGD learns, while Adam-style optimizers need care (see the docs).
    seen: list[torch.dtype] = []

    class Model(regressor):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(batch[0].dtype)
            loss = super().training_step(batch, batch_idx)
            seen.append(loss.dtype)
            return loss

    train, val = loaders
    model_ = Model(lr=0.05)
    trainer = make_trainer(max_epochs=5, precision=precision)
    assert trainer.precision == precision
    [before] = trainer.validate(model_, val, verbose=False)
    trainer.fit(model_, train, val)
    [after] = trainer.validate(model_, val, verbose=False)
    assert set(seen) == {dtype}
    assert all(p.dtype == dtype for p in model_.parameters())
    assert after["val_loss"] < before["val_loss"] * 0.5
    assert trainer.predict(model_, val)[0].dtype == dtype


def test_checkpoint_round_trip_keeps_the_dtype(make_trainer: Any, regressor: Any, loaders: Any, tmp_path: Path) -> None:
    train, _ = loaders
    trainer = make_trainer(max_epochs=1, precision="bf16-true")
    trainer.fit(regressor(), train)
    path = tmp_path / "bf16.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["precision"] == {}
    assert {t.dtype for t in checkpoint["state_dict"].values()} == {torch.bfloat16}
    resumed = make_trainer(max_epochs=2, precision="bf16-true")
    model_ = regressor()
    resumed.fit(model_, train, ckpt_path=str(path))
    assert resumed.global_step == 8 and model_.layer.weight.dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision,dtype", [("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
def test_fit_on_cuda(tmp_path: Path, regressor: Any, loaders: Any, precision: str, dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    train, val = loaders
    model_ = regressor(lr=0.05)
    trainer = ember.Trainer(
        accelerator="cuda",
        devices=1,
        precision=precision,
        max_epochs=5,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    [before] = trainer.validate(model_, val, verbose=False)
    trainer.fit(model_, train, val)
    [after] = trainer.validate(model_, val, verbose=False)
    assert all(p.dtype == dtype and p.device.type == "cuda" for p in model_.parameters())
    assert after["val_loss"] < before["val_loss"] * 0.5
