"""One process, one device."""

from __future__ import annotations

from typing import Any

import torch

from ember.plugin_manager import hookimpl
from ember.strategies import StrategyBase, lightning_aliases
from ember.tensors import move_to_device  # noqa: F401  (re-exported: ddp, ember-xla)


class SingleDeviceStrategy(StrategyBase):
    """One process on one device; the backward pass, optimizer step and
    checkpoint files are :class:`~ember.strategies.StrategyBase`'s."""

    name = "single_device"

    def __init__(
        self,
        accelerator: Any = None,
        precision: Any = None,
        checkpoint_io: Any = None,
        environment: Any = None,
        devices: list[torch.device] | None = None,
        num_nodes: int = 1,
        device: torch.device | str | None = "cpu",
        precision_plugin: Any = None,
    ) -> None:
        # ``None`` roles are filled in by the Trainer; Lightning's names are accepted.
        _, _, precision = lightning_aliases(None, None, precision, None, None, precision_plugin, type(self).__name__)
        if isinstance(device, str):
            device = torch.device(device)
        if devices:  # the Trainer's devices (``device`` keeps its default then)
            if len(devices) != 1 or num_nodes != 1:
                raise ValueError(
                    f"The single-device strategy runs one process on one device, not {len(devices)} device(s) on {num_nodes} node(s)."
                )
            device = devices[0]
        super().__init__(accelerator, precision, checkpoint_io, environment)
        self._device = device or torch.device("cpu")
        # CPU tensors need no transfer; skipping the walk keeps the step cheap.
        self._needs_transfer = self._device.type != "cpu"
        #: False when batch_to_device would return the batch unchanged, so the loop skips the call.
        self.moves_batches = self._needs_transfer or getattr(precision, "converts_input", True)

    @property
    def root_device(self) -> torch.device:
        return self._device

    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    is_global_zero = True

    def setup_environment(self) -> None:
        self.accelerator.setup_device(self._device)

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = self.precision.convert_module(module)
        return module.to(self._device)

    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        return dataloader

    def batch_to_device(self, batch: Any) -> Any:
        if self._needs_transfer:
            batch = move_to_device(batch, self._device)
        return self.precision.convert_input(batch)

    def reduce(self, tensor: Any, op: str = "mean") -> Any:
        return tensor

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self, name: str | None = None) -> None:
        pass

    def teardown(self) -> None:
        self.accelerator.teardown()


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("strategy", "single_device", SingleDeviceStrategy)
