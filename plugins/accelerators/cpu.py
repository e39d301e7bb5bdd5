"""The CPU accelerator."""

from __future__ import annotations

import torch

from ember.plugin_manager import hookimpl


class CPUAccelerator:
    name = "cpu"

    @staticmethod
    def is_available() -> bool:
        return True

    def parse_devices(self, devices: int | str | list[int]) -> list[torch.device]:
        # One process drives the CPU; more CPU processes is the strategy's business.
        if devices in ("auto", 1, "1", -1, [0], None):
            return [torch.device("cpu")]
        if isinstance(devices, int) and devices > 1:
            return [torch.device("cpu")] * devices
        raise ValueError(f"devices={devices!r} is not valid for the CPU accelerator: use an int (number of processes) or 'auto'.")

    def setup_device(self, device: torch.device) -> None:
        pass

    def teardown(self) -> None:
        pass


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("accelerator", "cpu", CPUAccelerator)
