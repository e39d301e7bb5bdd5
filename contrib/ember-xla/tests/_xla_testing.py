"""Helpers shared by ember-xla's tests: fakes for the torch_xla calls only."""

from __future__ import annotations

import os
import shutil
import sys
import types
from typing import Any


def ember_command() -> list[str]:
    """The ``ember`` script of the running interpreter's environment."""
    script = os.path.join(os.path.dirname(sys.executable), "ember")
    if os.path.isfile(script):
        return [script]
    found = shutil.which("ember")
    return [found] if found else [sys.executable, "-c", "import sys; from ember.cli import main; sys.exit(main())"]


class FakeXM:
    """Stands in for ``torch_xla.core.xla_model`` where torch_xla is absent:
    records calls; ``all_reduce`` acts as if every replica held the same value."""

    REDUCE_SUM, REDUCE_MAX, REDUCE_MIN = "sum", "max", "min"

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.calls: list[tuple[Any, ...]] = []

    def all_reduce(self, reduce_type: str, value: Any) -> Any:
        self.calls.append(("all_reduce", reduce_type, value.device.type))
        return value * self.world_size if reduce_type == self.REDUCE_SUM else value.clone()

    def all_gather(self, value: Any, dim: int = 0) -> Any:
        import torch

        self.calls.append(("all_gather", tuple(value.shape), dim))
        return torch.cat([value + r for r in range(self.world_size)], dim=dim)

    def rendezvous(self, tag: str, payload: bytes = b"") -> list[bytes]:
        self.calls.append(("rendezvous", tag, payload))
        return [payload if r == 0 else b"" for r in range(self.world_size)]

    def reduce_gradients(self, optimizer: Any) -> None:
        self.calls.append(("reduce_gradients", optimizer))

    def broadcast_master_param(self, module: Any) -> None:
        self.calls.append(("broadcast_master_param",))

    def mark_step(self) -> None:
        self.calls.append(("mark_step",))


def fake_xla(world_size: int = 2, ordinal: int = 0, device_type: str = "CPU") -> types.SimpleNamespace:
    """A namespace shaped like ``_runtime.load()``'s, with only the torch_xla
    calls ember-xla makes replaced; tensors stay on the CPU."""
    import torch

    xm = FakeXM(world_size)
    xr = types.SimpleNamespace(
        device_type=lambda: device_type,
        world_size=lambda: world_size,
        global_ordinal=lambda: ordinal,
        local_ordinal=lambda: ordinal,
        host_index=lambda: 0,
    )
    torch_xla = types.SimpleNamespace(device=lambda index=None: torch.device("cpu"), sync=lambda: xm.calls.append(("sync",)))
    return types.SimpleNamespace(torch_xla=torch_xla, xm=xm, xr=xr, xmp=types.SimpleNamespace(spawn=None))
