"""ember-xla: XLA (TPU) support for ember on torch_xla's PJRT runtime.

Registers, through the ``ember.plugins`` entry point:

- accelerator ``"xla"`` (:class:`~ember_xla.accelerator.XLAAccelerator`);
- strategies ``"xla"`` (one device) and ``"xla_ddp"`` (one replica per local
  device, started with ``torch_xla.launch``);
- precision ``"xla-bf16"``.

Importing this package does not import torch_xla; the roles import it when
they are used (see :mod:`ember_xla._runtime`).
"""

from __future__ import annotations

from ember.plugin_manager import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    from ember_xla.accelerator import create_accelerator
    from ember_xla.precision import xla_bf16_precision
    from ember_xla.strategies import XLADDPStrategy, XLAStrategy

    registry.add("accelerator", "xla", create_accelerator)
    registry.add("strategy", "xla", XLAStrategy)
    registry.add("strategy", "xla_ddp", XLADDPStrategy)
    registry.add("precision", "xla-bf16", xla_bf16_precision)
