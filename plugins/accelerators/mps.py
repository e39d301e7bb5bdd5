"""The MPS accelerator: the GPU of Apple-silicon Macs through ``torch.backends.mps``.

There is one MPS device per machine, so ``devices`` may only be ``1``,
``"1"``, ``[0]``, ``"0"``, ``-1`` or ``"auto"``.
"""

from __future__ import annotations

import platform

import torch

from ember.plugin_manager import hookimpl


class MPSAccelerator:
    name = "mps"
    #: Chosen by ``accelerator="auto"`` over the CPU (0), below CUDA (10).
    auto_priority = 5

    @staticmethod
    def is_available() -> bool:
        backend = getattr(torch.backends, "mps", None)
        return bool(backend is not None and backend.is_available())

    @staticmethod
    def unavailable_reason() -> str:
        """What was found instead of a usable MPS device, for error messages."""
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_built():
            return f"this torch ({torch.__version__}) was built without MPS support (it exists only in macOS builds)"
        return f"torch {torch.__version__} has MPS support but finds no MPS device (system: {platform.system()} {platform.release()}; MPS needs Apple silicon and macOS 12.3 or later)"

    def parse_devices(self, devices: int | str | list[int] | None) -> list[torch.device]:
        if devices not in ("auto", 1, "1", -1, "-1", [0], (0,), "0", None):
            raise ValueError(f"devices={devices!r} is not valid for the MPS accelerator: a Mac has one MPS device, so use 1 or 'auto'.")
        if not self.is_available():
            raise RuntimeError(f"devices={devices!r} on the MPS accelerator, but {self.unavailable_reason()}.")
        return [torch.device("mps", 0)]

    def setup_device(self, device: torch.device) -> None:
        if device.type != "mps":
            raise ValueError(f"The MPS accelerator cannot set up {device}.")

    def teardown(self) -> None:
        mps = getattr(torch, "mps", None)
        if mps is not None and self.is_available():
            mps.empty_cache()


def mps_accelerator() -> MPSAccelerator:
    """The GPU of Apple-silicon Macs through ``torch.backends.mps``
    (``auto_priority`` 5; one device). Refuses with what was found when MPS
    is absent."""
    if not MPSAccelerator.is_available():
        raise RuntimeError(
            f"accelerator='mps' was requested, but {MPSAccelerator.unavailable_reason()}. Use accelerator='auto' or accelerator='cpu'."
        )
    return MPSAccelerator()


mps_accelerator.is_available = MPSAccelerator.is_available  # type: ignore[attr-defined]
mps_accelerator.auto_priority = MPSAccelerator.auto_priority  # type: ignore[attr-defined]


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("accelerator", "mps", mps_accelerator)
