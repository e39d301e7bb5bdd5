"""Exporting a trained :class:`~ember.Module` for serving: ONNX and ``torch.export``.

Both exporters trace ``module.forward`` on an example input: the
``input_sample`` you pass, or else the module's ``example_input_array``. The
sample may be a tensor (one positional argument), a tuple or list (the
positional arguments) or a dict (keyword arguments).

While tracing, the module is put in eval mode (dropout off, batch norm using
its running statistics) and is put back in the mode it was in afterwards.
By default the first dimension of every tensor input is exported as a dynamic
batch dimension, so the exported model accepts any batch size; pass
``dynamic_batch=False`` for fixed shapes (some models reshape with a
hard-coded batch size and cannot be exported otherwise).

ONNX export uses ``torch.onnx.export`` with the ``torch.export``-based
exporter, which needs the ``onnx`` and ``onnxscript`` packages; running the
file needs ``onnxruntime``. All three come with ``pip install 'ember[export]'``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ember.tensors import apply_to_tensors

__all__ = ["FORMATS", "ExportError", "export", "to_onnx", "to_torch_export"]

#: The formats :func:`export` (and ``ember export --format``) knows, with their usual file suffix.
FORMATS: dict[str, str] = {"onnx": ".onnx", "torch_export": ".pt2"}

# ONNX files are protobufs, limited to 2 GB; larger weights must go to an external file.
_EXTERNAL_DATA_BYTES = 1_500_000_000


class ExportError(RuntimeError):
    """An export could not be done; the message says why and what to do."""


# --------------------------------------------------------------------------- the input sample


def _resolve_sample(module: torch.nn.Module, input_sample: Any) -> Any:
    if input_sample is not None:
        return input_sample
    sample = getattr(module, "example_input_array", None)
    if sample is None:
        raise ExportError(
            f"Cannot export {type(module).__name__}: no input sample. Pass input_sample= (a tensor, a tuple of positional "
            f"arguments or a dict of keyword arguments for forward()), or set {type(module).__name__}.example_input_array "
            "(e.g. `self.example_input_array = torch.zeros(1, 3, 32, 32)` in __init__)."
        )
    return sample


def _split_sample(sample: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for ``forward`` from a sample."""
    if isinstance(sample, Mapping):
        return (), dict(sample)
    if isinstance(sample, list):
        return tuple(sample), {}
    if isinstance(sample, tuple):
        return sample, {}
    return (sample,), {}


def _device_of(module: torch.nn.Module) -> torch.device:
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _to_device(obj: Any, device: torch.device) -> Any:
    return apply_to_tensors(obj, lambda t: t.to(device))


def _at_least_two(obj: Any) -> Any:
    """Tensors whose first dimension is 1, repeated to 2: ``torch.export``
    specialises size-1 dimensions, so a dynamic batch is traced on two rows."""
    return apply_to_tensors(obj, lambda t: torch.cat([t, t]) if t.dim() > 0 and t.shape[0] == 1 else t)


def _none(obj: Any) -> None:
    return None


def _batch_shapes(obj: Any, batch: Any) -> Any:
    """``dynamic_shapes`` for ``torch.export`` that make dimension 0 of every tensor ``batch``."""
    return apply_to_tensors(obj, lambda t: {0: batch} if t.dim() > 0 else None, _none)


def _dynamic_shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    batch = torch.export.Dim("batch")
    if kwargs:
        # torch.export wants one entry per forward() argument, by name, when keyword arguments are used
        shapes: dict[str, Any] = {}
        if args:
            raise ExportError("A dynamic batch needs the sample to be positional arguments or keyword arguments, not both.")
        for k, v in kwargs.items():
            shapes[k] = _batch_shapes(v, batch)
        return shapes
    return tuple(_batch_shapes(a, batch) for a in args)


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _prepare(module: torch.nn.Module, input_sample: Any, dynamic_batch: bool) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"Expected a torch.nn.Module (an ember.Module) to export, got {type(module).__name__}.")
    sample = _to_device(_resolve_sample(module, input_sample), _device_of(module))
    if dynamic_batch:
        sample = _at_least_two(sample)
    return _split_sample(sample)


def _export_failed(what: str, module: torch.nn.Module, exc: Exception, dynamic_batch: bool) -> ExportError:
    hint = (
        " The batch dimension was exported as dynamic: if the model needs a fixed batch size, pass dynamic_batch=False "
        "(`ember export ... --static-batch`)."
        if dynamic_batch
        else ""
    )
    return ExportError(f"{what} of {type(module).__name__} failed.{hint}\n{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- torch.export


def to_torch_export(
    module: torch.nn.Module,
    input_sample: Any = None,
    path: str | os.PathLike[str] | None = None,
    *,
    dynamic_batch: bool = True,
    strict: bool = False,
    **kwargs: Any,
) -> torch.export.ExportedProgram:
    """Export ``module.forward`` with :func:`torch.export.export`.

    :param input_sample: what to trace ``forward`` with; defaults to ``module.example_input_array``.
    :param path: when given, also write the program there with :func:`torch.export.save`
        (by convention a ``.pt2`` file; load it with :func:`torch.export.load`).
    :param dynamic_batch: export dimension 0 of every tensor input as a dynamic batch size.
    :param strict: passed to :func:`torch.export.export` (``False`` traces with the Python interpreter).
    :param kwargs: passed to :func:`torch.export.export` (e.g. your own ``dynamic_shapes``).
    :returns: the :class:`torch.export.ExportedProgram`; call ``.module()`` on it for a runnable module.
    """
    args, sample_kwargs = _prepare(module, input_sample, dynamic_batch)
    dynamic = dynamic_batch and "dynamic_shapes" not in kwargs
    if dynamic:
        kwargs["dynamic_shapes"] = _dynamic_shapes(args, sample_kwargs)
    with _eval_mode(module):
        try:
            program = torch.export.export(module, args, sample_kwargs or None, strict=strict, **kwargs)
        except Exception as exc:
            raise _export_failed("torch.export.export", module, exc, dynamic) from exc
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, os.fspath(path))
    return program


# --------------------------------------------------------------------------- ONNX


def _check_onnx_deps() -> None:
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"ONNX export needs {' and '.join(missing)} (torch.onnx's exporter is built on them). "
            "Install them with: pip install 'ember[export]'"
        )


def _output_names(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str] | None:
    """``["output"]`` for one tensor, ``output_0, output_1, ...`` for a tuple or list of them."""
    with torch.no_grad(), _eval_mode(module):
        out = module(*args, **kwargs)
    if isinstance(out, torch.Tensor):
        return ["output"]
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return [f"output_{i}" for i in range(len(out))]
    return None  # nested or dict outputs: let the exporter name them


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def to_onnx(
    module: torch.nn.Module,
    path: str | os.PathLike[str] | None,
    input_sample: Any = None,
    *,
    dynamic_batch: bool = True,
    **kwargs: Any,
) -> Any:
    """Export ``module.forward`` to an ONNX file with :func:`torch.onnx.export`.

    :param path: the ``.onnx`` file to write (its folder is created).
    :param input_sample: what to trace ``forward`` with; defaults to ``module.example_input_array``.
    :param dynamic_batch: export dimension 0 of every tensor input as a dynamic batch size.
    :param kwargs: passed to :func:`torch.onnx.export` (``opset_version``, ``input_names``,
        ``output_names``, ``dynamic_shapes``, ``external_data``, ``dynamo`` ...).

    Inputs are named ``input`` (one positional tensor), ``input_0``, ``input_1``, ...
    (several), or after the keyword arguments of a dict sample; outputs ``output``
    (one tensor) or ``output_0``, ``output_1``, ... Weights are stored inside the
    file unless the model is too large for one ONNX file (then next to it, as
    ``<name>.data``). Returns the path written; with ``path=None`` nothing is
    written and the ``torch.onnx.ONNXProgram`` is returned (``.save(path)`` writes it).
    """
    args, sample_kwargs = _prepare(module, input_sample, dynamic_batch)
    # the dynamo exporter is torch.onnx.export's default from torch 2.9; ask for it by name on older ones
    use_dynamo = kwargs.setdefault("dynamo", True)
    if use_dynamo:
        _check_onnx_deps()
    if path is None and not use_dynamo:
        raise ExportError("to_onnx without a file path returns the ONNX program, which needs the dynamo exporter (dynamo=True).")
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    if "input_names" not in kwargs and not sample_kwargs:
        kwargs["input_names"] = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    if "output_names" not in kwargs:
        names = _output_names(module, args, sample_kwargs)
        if names is not None:
            kwargs["output_names"] = names
    dynamic = dynamic_batch and "dynamic_shapes" not in kwargs and "dynamic_axes" not in kwargs
    if dynamic:
        if use_dynamo:
            kwargs["dynamic_shapes"] = _dynamic_shapes(args, sample_kwargs)
        else:  # the TorchScript-based exporter names dynamic axes instead
            names = [*kwargs.get("input_names", sample_kwargs), *kwargs.get("output_names", ())]
            kwargs["dynamic_axes"] = {name: {0: "batch"} for name in names}
    if use_dynamo:
        kwargs.setdefault("external_data", _param_bytes(module) > _EXTERNAL_DATA_BYTES)
        kwargs.setdefault("verbose", False)
    with _eval_mode(module), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            program = torch.onnx.export(module, args, os.fspath(path) if path is not None else None, kwargs=sample_kwargs or None, **kwargs)
        except ExportError:
            raise
        except ImportError as exc:
            raise ExportError(
                f"ONNX export needs a package that is missing ({exc}). Install the extras: pip install 'ember[export]'"
            ) from exc
        except Exception as exc:
            raise _export_failed("torch.onnx.export", module, exc, dynamic) from exc
    return path if path is not None else program


# --------------------------------------------------------------------------- by name


def export(module: torch.nn.Module, format: str, path: str | os.PathLike[str], input_sample: Any = None, **kwargs: Any) -> Path:
    """Export ``module`` to ``path`` in ``format`` (``"onnx"`` or ``"torch_export"``)."""
    if format == "onnx":
        return to_onnx(module, path, input_sample, **kwargs)
    if format == "torch_export":
        to_torch_export(module, input_sample, path, **kwargs)
        return Path(path)
    from ember.suggest import did_you_mean

    raise ValueError(
        f"Unknown export format {format!r}; choose one of {', '.join(map(repr, FORMATS))}.{did_you_mean(str(format), list(FORMATS))}"
    )
