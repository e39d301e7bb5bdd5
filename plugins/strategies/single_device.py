"""One process, one device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ember.plugin_manager import hookimpl
from ember.strategies import StrategyBase
from ember.tensors import move_to_device  # noqa: F401  (re-exported: ddp, ember-xla)


class SingleDeviceStrategy(StrategyBase):
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
        if precision_plugin is not None:
            if precision is not None:
                raise TypeError("SingleDeviceStrategy: pass precision= or Lightning's precision_plugin=, not both.")
            precision = precision_plugin
        if isinstance(device, str):
            device = torch.device(device)
        if devices:  # the Trainer's devices (``device`` keeps its default then)
            if len(devices) != 1 or num_nodes != 1:
                raise ValueError(
                    f"The single-device strategy runs one process on one device, not {len(devices)} device(s) on {num_nodes} node(s)."
                )
            device = devices[0]
        StrategyBase.__init__(self, accelerator, precision, checkpoint_io, environment)
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

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        return optimizers

    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        return dataloader

    def batch_to_device(self, batch: Any) -> Any:
        if self._needs_transfer:
            batch = move_to_device(batch, self._device)
        return self.precision.convert_input(batch)

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.precision.backward(loss, module)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    def reduce(self, tensor: Any, op: str = "mean") -> Any:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(0) if isinstance(tensor, torch.Tensor) else tensor

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self, name: str | None = None) -> None:
        pass

    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        return module.state_dict()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        return self.checkpoint_io.load_checkpoint(path)

    def remove_checkpoint(self, path: str) -> None:
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(path)

    def teardown(self) -> None:
        self.accelerator.teardown()


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("strategy", "single_device", SingleDeviceStrategy)
