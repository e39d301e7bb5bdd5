"""The dummy plugin's strategy: ember's single-device strategy, marked."""

from __future__ import annotations

from typing import Any

from ember.plugins.strategies.single_device import SingleDeviceStrategy


class DummyStrategy(SingleDeviceStrategy):
    """Behaves exactly like ``single_device``; records that it was used."""

    name = "dummy_strategy"
    is_dummy = True
    #: every instance created in this process, newest last
    instances: list[DummyStrategy] = []

    def __init__(
        self,
        accelerator: Any,
        precision: Any,
        checkpoint_io: Any,
        environment: Any,
        device: Any = None,
        devices: Any = None,
        num_nodes: int = 1,
    ) -> None:
        # The trainer passes ``device`` to "single_device" and ``devices`` /
        # ``num_nodes`` to every other strategy name; this one runs on one device.
        if device is None and devices:
            if len(devices) != 1 or num_nodes != 1:
                raise ValueError(f"dummy_strategy runs on one device; got devices={devices!r}, num_nodes={num_nodes}.")
            device = devices[0]
        super().__init__(accelerator=accelerator, precision=precision, checkpoint_io=checkpoint_io, environment=environment, device=device)
        self.setup_module_calls = 0
        DummyStrategy.instances.append(self)
        from ember_dummy_plugin import mark

        mark("dummy_strategy.created")

    def setup_module(self, module: Any) -> Any:
        self.setup_module_calls += 1
        from ember_dummy_plugin import mark

        mark("dummy_strategy.setup_module")
        return super().setup_module(module)
