"""The dummy plugin's strategy: ember's single-device strategy, marked."""

from __future__ import annotations

from typing import Any

from ember.plugins.strategies.single_device import SingleDeviceStrategy


class DummyStrategy(SingleDeviceStrategy):
    """Behaves exactly like ``single_device``; records that it was used."""

    name = "dummy_strategy"
    is_dummy = True
    #: every instance created in this process, newest last
    instances: list["DummyStrategy"] = []

    def __init__(self, accelerator: Any, precision: Any, checkpoint_io: Any, environment: Any, device: Any = None) -> None:
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
