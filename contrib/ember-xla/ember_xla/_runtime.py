"""The one place that imports torch_xla, lazily, and says why it cannot.

Nothing in ``ember_xla`` imports torch_xla at module level: ember loads every
installed plugin at start-up, and torch_xla is slow to import, prints
warnings, and fails outright when it was built for another torch. The
accelerator and strategies call :func:`load` when they need it.

Tests replace :func:`load` (or the attributes of the namespace it returns)
to exercise the pure logic where torch_xla is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
from typing import Any

import torch

from ember import tensors


class XLAUnavailableError(RuntimeError):
    """torch_xla is missing, does not import, or has no device configured."""


_loaded: types.SimpleNamespace | None = None
_import_error: BaseException | None = None
#: True when the PJRT_DEVICE in the environment came from torch_xla's own
#: import-time default (``CPU`` when it finds no accelerator), not from the user.
_pjrt_device_defaulted = False


def installed_version() -> str | None:
    """The installed torch_xla distribution's version, without importing it."""
    try:
        from importlib import metadata

        return metadata.version("torch_xla")
    except Exception:
        return None


def required_torch() -> str | None:
    """The torch requirement torch_xla's metadata declares (``"torch==2.9.0"``), if any."""
    try:
        from importlib import metadata

        for req in metadata.requires("torch_xla") or ():
            head = req.split(";")[0].strip()
            if re.match(r"^torch\s*(\[|[<>=!~]|$)", head):
                return head.replace(" ", "")
    except Exception:
        pass
    return None


def _import() -> types.SimpleNamespace:
    torch_xla = importlib.import_module("torch_xla")
    xm = importlib.import_module("torch_xla.core.xla_model")
    xr = importlib.import_module("torch_xla.runtime")
    xmp = importlib.import_module("torch_xla.distributed.xla_multiprocessing")
    return types.SimpleNamespace(torch_xla=torch_xla, xm=xm, xr=xr, xmp=xmp)


def load() -> types.SimpleNamespace:
    """``torch_xla`` and its modules ``xm`` (core.xla_model), ``xr`` (runtime)
    and ``xmp`` (distributed.xla_multiprocessing), or :class:`XLAUnavailableError`
    saying why they cannot be had."""
    global _loaded, _import_error, _pjrt_device_defaulted
    if _loaded is not None:
        return _loaded
    if _import_error is None:
        if importlib.util.find_spec("torch_xla") is None:
            raise XLAUnavailableError(missing_message())
        had_device = "PJRT_DEVICE" in os.environ or "torch_xla" in sys.modules
        try:
            _loaded = _import()
            _pjrt_device_defaulted = not had_device and "PJRT_DEVICE" in os.environ
            return _loaded
        except Exception as exc:  # ImportError, OSError (undefined symbol), anything a broken build raises
            _import_error = exc
    raise XLAUnavailableError(import_failure_message(_import_error)) from _import_error


def missing_message() -> str:
    return (
        f"torch_xla is not installed (torch {torch.__version__} is). Install a torch_xla built for your torch, for example "
        "`pip install 'ember-xla[tpu]'` on a TPU VM (torch_xla pins one torch release and installs it)."
    )


def import_failure_message(exc: BaseException | None) -> str:
    version = installed_version() or "?"
    required = required_torch()
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}" if exc is not None else "unknown error"
    if required:
        built = f"it requires {required}, and torch {torch.__version__} is installed"
    else:
        built = f"torch {torch.__version__} is installed; torch_xla only works with the torch release it was built for"
    return f"torch_xla {version} is installed but does not import ({detail}): {built}. Install matching torch and torch_xla releases."


def device_type(xla: types.SimpleNamespace) -> str | None:
    """The PJRT device type (``"TPU"``, ``"CPU"``, ``"CUDA"``, ``"NEURON"``...), or None.

    torch_xla falls back to ``PJRT_DEVICE=CPU`` on import when it finds no
    accelerator; that fallback does not count as a device here unless the user
    asked for CPU themselves (``PJRT_DEVICE=CPU``), so that ``accelerator="auto"``
    never prefers the XLA CPU client over ember's own CPU accelerator."""
    value = xla.xr.device_type()
    if not value:
        return None
    value = str(value).upper()
    if value == "CPU" and _pjrt_device_defaulted:
        return None
    return value


def unavailable_reason() -> str | None:
    """Why XLA cannot be used in this process, or None when it can. Never raises."""
    try:
        xla = load()
    except XLAUnavailableError as exc:
        return str(exc)
    except Exception as exc:  # pragma: no cover - belt and braces
        return f"torch_xla could not be loaded ({type(exc).__name__}: {exc})"
    try:
        kind = device_type(xla)
    except Exception as exc:
        return f"torch_xla {installed_version() or ''} imports, but asking it for the device type failed ({type(exc).__name__}: {exc})"
    if kind is None:
        return (
            f"torch_xla {installed_version() or ''} imports, but found no XLA device (no TPU, and PJRT_DEVICE is not set). "
            "Set PJRT_DEVICE=TPU (or CPU, CUDA) to choose the PJRT device."
        )
    return None


def is_available() -> bool:
    try:
        return unavailable_reason() is None
    except Exception:
        return False


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor moved to the CPU (containers rebuilt): ember's own walker."""
    return tensors.to_cpu(value)
