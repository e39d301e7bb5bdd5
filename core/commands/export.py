"""``ember export CKPT [--format onnx|torch_export] [--output PATH]``: rebuild
the stack's model from a checkpoint and export it for serving.

The model class comes from the stack's ``model.class_path`` (``--config``,
discovery and overrides work as for ``ember fit``: ``--model.class_path
pkg.mod:Net`` names one without a stack file); ``load_from_checkpoint``
rebuilds it with the checkpoint's hyperparameters and weights. The input
sample that export traces is, in order: ``--input-shape`` (zeros of that
shape), the model's ``example_input_array``, or the first batch of the
stack's data module (its predict, test, validation or training loader).

Only the standard library is imported at import time (``ember --help`` must
not import torch); :mod:`ember.commands.main` imports this module lazily.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

# Kept here (not imported from ember.export) so that building the parser imports no torch.
_FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}
_SUFFIX_FORMAT = {".onnx": "onnx", ".pt2": "torch_export"}


class _ExportUsageError(Exception):
    """A problem with the command line or the stack: exit status 2."""


def add_parser(sub: Any) -> None:
    """Add ``export`` to ``ember``'s subparsers."""
    p = sub.add_parser(
        "export",
        help="export a checkpoint's model to ONNX or torch.export",
        description=(
            "Rebuild the stack's model (model.class_path) from a checkpoint and export its forward() to ONNX "
            "(needs `pip install 'ember[export]'`) or to a torch.export program (.pt2). Stack overrides such as "
            "--model.class_path pkg.mod:Net work as for `ember fit`."
        ),
        allow_abbrev=False,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint file written by ember")
    p.add_argument(
        "--format",
        metavar="FORMAT",
        help="onnx or torch_export (default: from the --output suffix, .onnx or .pt2; else onnx)",
    )
    p.add_argument("--output", metavar="PATH", help="file to write (default: CKPT with the format's suffix, .onnx or .pt2)")
    p.add_argument(
        "--config",
        metavar="PATH",
        help="stack file (default: ember.toml, else pyproject.toml with [tool.ember], searched upwards from the current directory)",
    )
    p.add_argument(
        "--input-shape",
        metavar="N,C,...",
        help="trace with zeros of this shape (e.g. 1,1,8,8) instead of example_input_array or a batch of the stack's data",
    )
    p.add_argument("--static-batch", action="store_true", help="export fixed shapes instead of a dynamic first (batch) dimension")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset version (default: the exporter's)")
    p.add_argument("--check", action="store_true", help="run the exported model on the sample and compare it with PyTorch")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from ember.stack import StackError

    try:
        return _run(args, overrides)
    except (_ExportUsageError, StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _format_and_output(args: argparse.Namespace) -> tuple[str, Path]:
    fmt = args.format
    if fmt is None:
        fmt = _SUFFIX_FORMAT.get(Path(args.output).suffix.lower(), "onnx") if args.output else "onnx"
    if fmt not in _FORMATS:
        from ember.suggest import did_you_mean

        raise _ExportUsageError(f"unknown export format {fmt!r}; choose onnx or torch_export.{did_you_mean(fmt, list(_FORMATS))}")
    output = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(_FORMATS[fmt])
    return fmt, output


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise _ExportUsageError(f"--input-shape {text!r}: expected comma-separated integers, like 1,3,32,32.") from None
    if not shape or any(n < 1 for n in shape):
        raise _ExportUsageError(f"--input-shape {text!r}: expected positive integers, like 1,3,32,32.")
    return shape


def _run(args: argparse.Namespace, overrides: list[str]) -> int:
    fmt, output = _format_and_output(args)
    shape = _parse_shape(args.input_shape) if args.input_shape else None
    ckpt = args.checkpoint
    if not os.path.isfile(ckpt):
        raise _ExportUsageError(f"checkpoint {ckpt!r} {'is a directory' if os.path.isdir(ckpt) else 'does not exist'}.")

    from ember.stack import StackError, load_stack
    from ember.stack.build import ensure_on_path, import_class_path, where_is

    stack = load_stack(args.config, Path.cwd(), overrides, dict(os.environ), check=False)
    if stack.model is None or not stack.model.class_path:
        raise _ExportUsageError(
            "no model class to rebuild the checkpoint with: the stack has no [model] class_path "
            f"({'stack: ' + str(stack.source) if stack.source else 'no stack file found'}). "
            "Pass --config PATH, or --model.class_path pkg.module:ClassName."
        )
    ensure_on_path(stack.import_root)
    where = f"{where_is(stack, 'model.class_path')} = {stack.model.class_path!r}"
    cls = import_class_path(stack.model.class_path, where)

    import torch

    import ember
    from ember.checkpointing import CheckpointError
    from ember.export import ExportError, export

    if not (isinstance(cls, type) and issubclass(cls, ember.Module)):
        raise StackError(f"{where}: export rebuilds an ember.Module with load_from_checkpoint; {cls!r} is not one.")
    try:
        module = cls.load_from_checkpoint(ckpt, map_location="cpu")
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"error: rebuilding {cls.__name__} from {ckpt!r} failed (traceback above).", file=sys.stderr)
        return 1
    module.eval()

    if shape is not None:
        sample, origin = torch.zeros(shape, dtype=module.dtype), f"zeros of shape {list(shape)} (--input-shape)"
    elif module.example_input_array is not None:
        sample, origin = module.example_input_array, f"{cls.__name__}.example_input_array"
    else:
        sample, origin = _sample_from_data(stack)
        if sample is None:
            raise _ExportUsageError(
                f"no input sample to trace {cls.__name__}.forward with: it has no example_input_array and {origin}. "
                "Pass --input-shape (e.g. --input-shape 1,3,32,32) or set example_input_array in the model's __init__."
            )

    options: dict[str, Any] = {"dynamic_batch": not args.static_batch}
    if args.opset is not None:
        if fmt != "onnx":
            raise _ExportUsageError("--opset applies to --format onnx only.")
        options["opset_version"] = args.opset
    try:
        written = export(module, fmt, output, sample, **options)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"error: exporting {cls.__name__} to {fmt} failed (traceback above).", file=sys.stderr)
        return 1
    size = os.path.getsize(written)
    print(f"exported {stack.model.class_path} from {ckpt} to {written} ({fmt}, {size / 1024:.0f} KiB); traced with {origin}")
    if args.check:
        diff = _check(module, fmt, written, sample)
        if diff is None:
            print("check skipped: onnxruntime is not installed (pip install 'ember[export]')")
        else:
            print(f"check: largest absolute difference from PyTorch on the sample: {diff:.3g}")
    return 0


def _sample_from_data(stack: Any) -> tuple[Any, str]:
    """The first batch's inputs from the stack's data module, or ``(None, why not)``."""
    if stack.data is None or not stack.data.class_path:
        return None, "the stack has no [data] to take a batch from"
    from ember.stack.build import check_kind, import_class_path, instantiate, where_is

    where = f"{where_is(stack, 'data.class_path')} = {stack.data.class_path!r}"
    cls = check_kind(import_class_path(stack.data.class_path, where, stack.import_root), "data", where)
    datamodule = instantiate(stack, stack.data, cls, stack.data.class_path)
    datamodule.prepare_data()
    for stage, method in (
        ("predict", "predict_dataloader"),
        ("test", "test_dataloader"),
        ("validate", "val_dataloader"),
        ("fit", "train_dataloader"),
    ):
        try:
            datamodule.setup(stage)
            loader = getattr(datamodule, method)()
            batch = next(iter(loader))
        except (NotImplementedError, StopIteration, AttributeError):
            continue
        if isinstance(loader, (list, tuple)):  # several dataloaders: take the first one's batch
            continue
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        return inputs, f"the first batch of {cls.__name__}.{method}()"
    return None, f"{cls.__name__} gave no batch to trace with"


def _check(module: Any, fmt: str, path: Path, sample: Any) -> float | None:
    import torch

    from ember.export import _split_sample

    args, kwargs = _split_sample(sample)
    with torch.no_grad():
        expected = module(*args, **kwargs)
        if fmt == "torch_export":
            got = torch.export.load(os.fspath(path)).module()(*args, **kwargs)
        else:
            try:
                import onnxruntime
            except ImportError:
                return None
            session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
            tensors = [*args, *kwargs.values()]
            feed = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), tensors, strict=False)}
            got = torch.as_tensor(session.run(None, feed)[0])
    expected = expected[0] if isinstance(expected, (list, tuple)) else expected
    got = got[0] if isinstance(got, (list, tuple)) else got
    return float((expected.detach().cpu().float() - got.detach().cpu().float()).abs().max())
