"""The ``xla`` accelerator: TPUs (and the other PJRT devices) through torch_xla.

``devices`` may be:

- ``1`` (or ``[i]``, one index): one device, for ``strategy="xla"``;
- an int ``n > 1``: ``n`` replicas for ``strategy="xla_ddp"``. Under PJRT the
  runtime starts one replica per local device and cannot be told to use fewer:
  limit the devices with torch_xla's own variables (``TPU_VISIBLE_CHIPS``,
  ``CPU_NUM_DEVICES``, ...). When the runtime's count differs from ``n``,
  the strategy warns and follows the runtime;
- ``"auto"``, ``-1`` or ``None``: every local device, counted without starting
  the XLA runtime (which must not be started before the replicas are spawned).
"""

from __future__ import annotations

import os

import torch

from ember_xla import _runtime


class XLAAccelerator:
    name = "xla"
    #: Chosen by ``accelerator="auto"`` over CUDA (10), MPS (5) and the CPU (0) when available.
    auto_priority = 20

    @staticmethod
    def default_strategy(num_devices: int, num_nodes: int) -> str:
        """What ``strategy="auto"`` means on XLA devices."""
        return "xla_ddp" if num_devices > 1 or num_nodes > 1 else "xla"

    @staticmethod
    def is_available() -> bool:
        """True when torch_xla imports and has a PJRT device. Never raises."""
        return _runtime.is_available()

    @staticmethod
    def unavailable_reason() -> str | None:
        return _runtime.unavailable_reason()

    @staticmethod
    def auto_device_count() -> int:
        """Local XLA devices, counted without initialising the runtime."""
        xla = _runtime.load()
        kind = _runtime.device_type(xla)
        if kind == "CPU":
            return int(os.environ.get("CPU_NUM_DEVICES", "1") or 1)
        if kind in ("CUDA", "GPU"):
            count = os.environ.get("GPU_NUM_DEVICES")
            return int(count) if count else max(torch.cuda.device_count(), 1)
        if kind == "TPU":
            try:  # torch_xla keeps this helper in a private module; absent in some releases
                from torch_xla._internal import tpu  # type: ignore[import-not-found]

                return int(tpu.num_available_devices())
            except Exception as exc:
                raise RuntimeError(
                    f"devices='auto': could not count the local TPU devices with this torch_xla ({type(exc).__name__}: {exc}). "
                    "Pass the number of devices, e.g. devices=4 (one per TPU chip on v4 and later, two per chip on v2/v3)."
                ) from exc
        raise RuntimeError(f"devices='auto' is not supported for PJRT device {kind!r}: pass the number of devices, e.g. devices=1.")

    def parse_devices(self, devices: int | str | list[int] | None) -> list[torch.device]:
        requested = devices
        if isinstance(devices, str):
            text = devices.strip().lower()
            if text in ("auto", "-1"):
                devices = -1
            else:
                try:
                    devices = int(text)
                except ValueError:
                    raise ValueError(
                        f"devices={requested!r} is not valid for the XLA accelerator: use a count (1, 8), 'auto' or -1 (every local device)."
                    ) from None
        if devices is None or devices == -1:
            return [torch.device("xla", i) for i in range(self.auto_device_count())]
        if isinstance(devices, bool):
            raise TypeError(f"devices={requested!r} is not valid for the XLA accelerator: use an int, 'auto' or -1.")
        if isinstance(devices, int):
            if devices < 1:
                raise ValueError(f"devices={requested!r}: use a count of at least 1, or 'auto' / -1 for every local XLA device.")
            return [torch.device("xla", i) for i in range(devices)]
        if isinstance(devices, (list, tuple)):
            if len(devices) == 1 and isinstance(devices[0], int) and not isinstance(devices[0], bool) and devices[0] >= 0:
                return [torch.device("xla", devices[0])]
            raise ValueError(
                f"devices={requested!r}: under PJRT, XLA devices cannot be chosen by index for data parallelism; the runtime "
                "starts one replica per local device. Give a count (or [i] for one device), and limit what the runtime sees "
                "with torch_xla's variables (TPU_VISIBLE_CHIPS, CPU_NUM_DEVICES)."
            )
        raise TypeError(f"devices={requested!r} is not valid for the XLA accelerator: use an int, 'auto' or -1.")

    def setup_device(self, device: torch.device) -> None:
        # PJRT assigns each replica its device when the runtime starts; nothing to do.
        pass

    def teardown(self) -> None:
        pass


def create_accelerator() -> XLAAccelerator:
    """The registered factory: fails with the reason when XLA cannot be used
    (the kernel's own check would only say that it is unavailable)."""
    reason = _runtime.unavailable_reason()
    if reason is not None:
        raise RuntimeError(
            f"accelerator='xla' was requested, but {reason} Use accelerator='auto' (picks what is present) or accelerator='cpu'."
        )
    return XLAAccelerator()


# accelerator="auto" reads these from the registered factory.
create_accelerator.is_available = XLAAccelerator.is_available  # type: ignore[attr-defined]
create_accelerator.auto_priority = XLAAccelerator.auto_priority  # type: ignore[attr-defined]
