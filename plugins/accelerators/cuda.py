"""The CUDA accelerator: NVIDIA GPUs through ``torch.cuda``.

``devices`` may be:

- an int ``n >= 1``: the first ``n`` visible GPUs (``cuda:0`` ... ``cuda:n-1``);
- ``-1``, ``"-1"`` or ``"auto"`` (or ``None``): every visible GPU;
- a list of indices (``[0, 2]``) or a string of them (``"0,2"``, ``"1,"``);
- a string holding one int (``"2"``): a count, like the int.

Indices are those torch sees, i.e. after ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os

import torch

from ember.plugin_manager import hookimpl


def _visible() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "CUDA_VISIBLE_DEVICES is not set" if value is None else f"CUDA_VISIBLE_DEVICES={value!r}"


def _plural(n: int) -> str:
    return f"{n} CUDA device is" if n == 1 else f"{n} CUDA devices are"


class CUDAAccelerator:
    name = "cuda"
    #: Chosen by ``accelerator="auto"`` over MPS (5) and the CPU (0) when available.
    auto_priority = 10

    @staticmethod
    def is_available() -> bool:
        return torch.cuda.is_available()

    @staticmethod
    def device_count() -> int:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    @staticmethod
    def unavailable_reason() -> str:
        """What was found instead of a usable GPU, for error messages."""
        if torch.version.cuda is None:
            return f"this torch ({torch.__version__}) was built without CUDA support"
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device ({_visible()})"

    def parse_devices(self, devices: int | str | list[int] | None) -> list[torch.device]:
        indices = self._indices(devices)
        return [torch.device("cuda", i) for i in indices]

    def _indices(self, devices: int | str | list[int] | None) -> list[int]:
        requested = devices
        if isinstance(devices, str):
            text = devices.strip()
            if text in ("auto", "-1"):
                devices = -1
            elif "," in text:
                try:
                    devices = [int(part) for part in text.split(",") if part.strip()]
                except ValueError:
                    raise ValueError(f"devices={requested!r} is not a list of GPU indices such as '0,1'.") from None
            else:
                try:
                    devices = int(text)
                except ValueError:
                    raise ValueError(
                        f"devices={requested!r} is not valid for the CUDA accelerator: use a count (2), GPU indices ([0, 1] or '0,1'), "
                        "-1 or 'auto' (all visible GPUs)."
                    ) from None
        elif isinstance(devices, tuple):
            devices = list(devices)
        count = self.device_count()
        if devices is None or devices == -1:
            if count == 0:
                raise RuntimeError(f"devices={requested!r} asks for every visible CUDA device, but {self.unavailable_reason()}.")
            return list(range(count))
        if isinstance(devices, bool) or not isinstance(devices, (int, list)):
            raise TypeError(
                f"devices={requested!r} is not valid for the CUDA accelerator: use an int, a list of GPU indices, a string like '0,1', or 'auto'."
            )
        if isinstance(devices, int):
            if devices < -1 or devices == 0:
                raise ValueError(
                    f"devices={requested!r} is not a number of GPUs: use a count of at least 1, -1 or 'auto' for all, "
                    "or accelerator='cpu' to run without a GPU."
                )
            if count == 0:
                raise RuntimeError(f"devices={requested!r} but {self.unavailable_reason()}.")
            if devices > count:
                raise ValueError(f"devices={requested!r} but only {_plural(count)} visible ({_visible()}).")
            return list(range(devices))
        if not devices:
            raise ValueError(f"devices={requested!r} names no GPU: give at least one index, a count, or 'auto'.")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in devices):
            raise TypeError(f"devices={requested!r}: GPU indices must be ints.")
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices={requested!r} names a GPU more than once.")
        if count == 0:
            raise RuntimeError(f"devices={requested!r} but {self.unavailable_reason()}.")
        missing = [i for i in devices if not 0 <= i < count]
        if missing:
            valid = "0" if count == 1 else f"0 to {count - 1}"
            raise ValueError(
                f"devices={requested!r} names GPU index {', '.join(map(str, missing))}, but only {_plural(count)} visible "
                f"(valid indices: {valid}; {_visible()})."
            )
        return list(devices)

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"The CUDA accelerator cannot set up {device}.")
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def cuda_accelerator() -> CUDAAccelerator:
    """NVIDIA GPUs through ``torch.cuda`` (``auto_priority`` 10). ``devices``: a
    count, ``-1``/``"auto"`` for all, or indices (``[0, 2]``, ``"0,2"``).
    Refuses with what was found (no CUDA build, no visible device,
    ``CUDA_VISIBLE_DEVICES``) when no GPU is usable."""
    if not CUDAAccelerator.is_available():
        raise RuntimeError(
            f"accelerator='cuda' was requested, but {CUDAAccelerator.unavailable_reason()}. "
            "Use accelerator='auto' (picks what is present) or accelerator='cpu'."
        )
    return CUDAAccelerator()


# accelerator="auto" reads these from the registered factory.
cuda_accelerator.is_available = CUDAAccelerator.is_available  # type: ignore[attr-defined]
cuda_accelerator.auto_priority = CUDAAccelerator.auto_priority  # type: ignore[attr-defined]


def gpu_accelerator() -> object:
    """An alias: the CUDA accelerator when a CUDA GPU is present, else MPS
    (``accelerator="auto"`` never picks it by this name)."""
    from ember.plugins.accelerators.mps import MPSAccelerator

    if CUDAAccelerator.is_available():
        return CUDAAccelerator()
    if MPSAccelerator.is_available():
        return MPSAccelerator()
    raise RuntimeError(
        f"accelerator='gpu' was requested, but no GPU is usable: {CUDAAccelerator.unavailable_reason()}, "
        f"and {MPSAccelerator.unavailable_reason()}. Use accelerator='auto' or accelerator='cpu'."
    )


def _gpu_available() -> bool:
    from ember.plugins.accelerators.mps import MPSAccelerator

    return CUDAAccelerator.is_available() or MPSAccelerator.is_available()


gpu_accelerator.is_available = _gpu_available  # type: ignore[attr-defined]
gpu_accelerator.auto_priority = -1  # type: ignore[attr-defined]  # an alias: "auto" picks "cuda" or "mps" by name


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("accelerator", "cuda", cuda_accelerator)
    registry.add("accelerator", "gpu", gpu_accelerator)
