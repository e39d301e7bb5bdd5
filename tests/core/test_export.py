"""Exporting a trained digits CNN: ONNX (checked with onnxruntime against
PyTorch on real digits), torch.export round trips, ``ember export`` end to end,
and the errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ember
from ember.export import ExportError, export, to_onnx, to_torch_export

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"
if str(DIGITS) not in sys.path:
    sys.path.insert(0, str(DIGITS))

pytest.importorskip("sklearn")

from data import DigitsDataModule  # noqa: E402
from model import DigitsCNN  # noqa: E402


def _onnx_deps() -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason="ONNX export needs the 'export' extra: pip install 'ember[export]'")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DigitsCNN, torch.Tensor, Path]:
    """The digits CNN after a short fit, a batch of real test digits, and its checkpoint."""
    root = tmp_path_factory.mktemp("digits")
    ember.seed_everything(0)
    module, dm = DigitsCNN(channels=16, hidden=64), DigitsDataModule(batch_size=64)
    trainer = ember.Trainer(
        max_epochs=1,
        limit_train_batches=10,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=dm)
    ckpt = root / "digits.ckpt"
    trainer.save_checkpoint(ckpt)
    images, _ = next(iter(dm.test_dataloader()))
    return module, images[:100], ckpt


def _eager(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module(x)
    module.train(was_training)
    return out


# --------------------------------------------------------------------------- ONNX


def test_onnx_matches_pytorch_on_real_digits(trained, tmp_path):
    _onnx_deps()
    import onnxruntime

    module, images, _ = trained
    module.train()  # export must trace in eval mode and put the mode back
    path = to_onnx(module, tmp_path / "nested" / "digits.onnx", images[:1])
    assert module.training and all(m.training for m in module.modules())
    assert path.is_file() and not Path(f"{path}.data").exists()  # small models keep their weights inside

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[1:] == [1, 8, 8] and not isinstance(inp.shape[0], int)  # dynamic batch
    assert [o.name for o in session.get_outputs()] == ["output"]
    (got,) = session.run(None, {"input": images.numpy()})  # 100 images, traced with 1
    expected = _eager(module, images)
    assert got.shape == (len(images), 10)
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)
    assert (torch.from_numpy(got).argmax(1) == expected.argmax(1)).all()


def test_module_methods_use_example_input_array(trained, tmp_path):
    _onnx_deps()
    import onnxruntime

    module, images, _ = trained
    module.example_input_array = torch.zeros(4, 1, 8, 8)
    try:
        path = module.to_onnx(tmp_path / "digits.onnx")
        program = module.to_torch_export()
    finally:
        module.example_input_array = None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": images[:9].numpy()})
    torch.testing.assert_close(torch.from_numpy(got), _eager(module, images[:9]), atol=1e-4, rtol=1e-4)
    assert isinstance(program, torch.export.ExportedProgram)


def test_onnx_static_batch(trained, tmp_path):
    _onnx_deps()
    import onnxruntime

    module, images, _ = trained
    path = to_onnx(module, tmp_path / "static.onnx", images[:8], dynamic_batch=False, opset_version=18)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [8, 1, 8, 8]
    (got,) = session.run(None, {"input": images[:8].numpy()})
    torch.testing.assert_close(torch.from_numpy(got), _eager(module, images[:8]), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- torch.export


def test_torch_export_round_trip_equals_eager(trained, tmp_path):
    module, images, _ = trained
    module.train()
    path = tmp_path / "digits.pt2"
    program = to_torch_export(module, images[:1], path)
    assert module.training
    assert isinstance(program, torch.export.ExportedProgram) and path.is_file()
    loaded = torch.export.load(str(path)).module()
    for batch in (images, images[:1], images[:37]):  # any batch size: the batch dimension is dynamic
        torch.testing.assert_close(loaded(batch), _eager(module, batch))
    torch.testing.assert_close(program.module()(images), _eager(module, images))


def test_torch_export_keyword_and_tuple_samples(tmp_path):
    class TwoInputs(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(3, 2)
            self.b = torch.nn.Linear(5, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(y)

    module = TwoInputs()
    x, y = torch.randn(6, 3), torch.randn(6, 5)
    by_position = to_torch_export(module, (x[:2], y[:2]), tmp_path / "pos.pt2").module()
    by_name = to_torch_export(module, {"x": x[:2], "y": y[:2]}).module()
    expected = module(x, y)
    torch.testing.assert_close(by_position(x, y), expected)
    torch.testing.assert_close(by_name(x=x, y=y), expected)


# --------------------------------------------------------------------------- errors


def test_no_sample_is_a_clear_error(trained, tmp_path):
    module, _, _ = trained
    assert module.example_input_array is None
    with pytest.raises(ExportError, match="example_input_array"):
        to_torch_export(module)
    with pytest.raises(ExportError, match="input_sample"):
        module.to_onnx(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_format_is_a_clear_error(trained, tmp_path):
    module, images, _ = trained
    with pytest.raises(ValueError, match=r"Unknown export format 'onx'.*'onnx', 'torch_export'.*Did you mean 'onnx'"):
        export(module, "onx", tmp_path / "x", images[:1])


def test_export_failure_names_the_model_and_the_fix():
    class FixedBatch(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.reshape(2, 4))  # hard-coded batch size

    with pytest.raises(ExportError, match=r"FixedBatch.*dynamic_batch=False"):
        to_torch_export(FixedBatch(), torch.zeros(2, 4))
    assert isinstance(to_torch_export(FixedBatch(), torch.zeros(2, 4), dynamic_batch=False), torch.export.ExportedProgram)


# --------------------------------------------------------------------------- ember export


def _ember(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "ember.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.mark.slow
def test_cli_exports_onnx_from_the_digits_stack(trained, tmp_path):
    _onnx_deps()
    import onnxruntime

    module, images, ckpt = trained
    out = tmp_path / "served" / "digits.onnx"
    # No example_input_array on DigitsCNN: the sample is the first batch of the stack's data module.
    proc = _ember(
        "export", str(ckpt), "--format", "onnx", "--output", str(out), "--config", str(DIGITS / "ember.toml"), "--check", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "DigitsDataModule.predict_dataloader()" in proc.stdout
    assert "check: largest absolute difference" in proc.stdout
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), _eager(module, images), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_cli_exports_torch_export_with_an_input_shape(trained, tmp_path):
    module, images, ckpt = trained
    out = tmp_path / "digits.pt2"
    proc = _ember(
        "export", str(ckpt), "--output", str(out), "--input-shape", "1,1,8,8", "--model.class_path", "model:DigitsCNN", cwd=DIGITS
    )  # format from the suffix; the class from an override (the stack in DIGITS names it too)
    assert proc.returncode == 0, proc.stderr
    assert "(torch_export," in proc.stdout
    torch.testing.assert_close(torch.export.load(str(out)).module()(images), _eager(module, images))


def test_cli_errors(trained, tmp_path):
    _, _, ckpt = trained
    proc = _ember("export", str(ckpt), "--format", "tflite", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown export format 'tflite'" in proc.stderr
    proc = _ember("export", str(ckpt), cwd=tmp_path)  # no stack file here, no --model.class_path
    assert proc.returncode == 2 and "no model class" in proc.stderr
    proc = _ember("export", str(tmp_path / "missing.ckpt"), cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = _ember("export", str(ckpt), "--input-shape", "a,b", "--model.class_path", "model:DigitsCNN", cwd=DIGITS)
    assert proc.returncode == 2 and "--input-shape" in proc.stderr


def test_export_help_imports_no_torch():
    code = "import sys; from ember import cli; rc = cli.main(['export', '--help']); assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--format" in proc.stdout and "--output" in proc.stdout
