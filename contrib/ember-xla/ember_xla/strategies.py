"""``xla`` (one XLA device) and ``xla_ddp`` (one replica per local XLA device).

XLA tensors are lazy: operations build a graph that runs when something needs
a value or when a step is marked. Both strategies mark a step
(``torch_xla.sync()``, ``xm.mark_step()`` before 2.6) after every optimizer
step and before moving each batch to the device, so that each training or
evaluation step compiles to one graph and the graph does not grow across
batches.

``xla_ddp`` under PJRT: the launcher hands the run to ``torch_xla.launch``
(``xmp.spawn`` where that does not exist), which starts one process per local
device (per chip on TPU v4 and later; CPU and v2/v3 use a thread per device).
Each replica unpickles its own copy of the trainer, runs the stage, and rank
zero's weights, metrics and counters come back to the calling process as with
ember's ``ddp_spawn``. Gradients are averaged across replicas right after each
backward pass (``xm.reduce_gradients``), so clipping and
``on_before_optimizer_step`` see the averaged gradients, as under DDP.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ember.plugins.strategies.distributed_sampler import split_across_ranks, with_sampler
from ember.plugins.strategies.single_device import SingleDeviceStrategy, move_to_device
from ember_xla import _runtime
from ember_xla.launcher import XLALauncher, XLAWorkerError, spawn_function  # noqa: F401  (re-exported)

#: The older name, kept for imports of ``ember_xla.strategies._spawn_function``.
_spawn_function = spawn_function

_REDUCE_TYPES = {"sum": "REDUCE_SUM", "mean": "REDUCE_SUM", "avg": "REDUCE_SUM", "max": "REDUCE_MAX", "min": "REDUCE_MIN"}


def sync(xla: Any) -> None:
    """Cut the pending lazy graph and run it (``torch_xla.sync`` or ``xm.mark_step``)."""
    step = getattr(xla.torch_xla, "sync", None)
    if step is None:
        step = xla.xm.mark_step
    step()


def xla_device(xla: Any, index: int | None = None) -> torch.device:
    """This replica's XLA device (``torch_xla.device`` or ``xm.xla_device``)."""
    get = getattr(xla.torch_xla, "device", None)
    if callable(get):
        return get() if index is None else get(index)
    return xla.xm.xla_device() if index is None else xla.xm.xla_device(index)


class XLAStrategy(SingleDeviceStrategy):
    """One process on one XLA device."""

    name = "xla"

    def __init__(
        self,
        accelerator: Any = None,
        precision: Any = None,
        checkpoint_io: Any = None,
        environment: Any = None,
        devices: list[torch.device] | None = None,
        num_nodes: int = 1,
    ) -> None:
        devices = list(devices) if devices else [torch.device("xla", 0)]
        if len(devices) != 1 or num_nodes != 1:
            raise ValueError(
                f"strategy='xla' runs one process on one XLA device, not {len(devices)} device(s) on {num_nodes} node(s); "
                "use strategy='xla_ddp' for data parallelism over the local XLA devices."
            )
        super().__init__(accelerator, precision, checkpoint_io, environment, devices=devices, num_nodes=1)
        self._needs_transfer = True
        self.moves_batches = True
        self._optimizers: list[torch.optim.Optimizer] = []
        self._xla: Any = None

    # ----------------------------------------------------------------- runtime
    @property
    def xla(self) -> Any:
        """torch_xla's modules (``torch_xla``, ``xm``, ``xr``, ``xmp``), imported on first use."""
        if self._xla is None:
            self._xla = _runtime.load()
        return self._xla

    def setup_environment(self) -> None:
        index = self._device.index
        self._device = xla_device(self.xla, index if index else None)
        self.accelerator.setup_device(self._device)

    # ----------------------------------------------------------------- model, data, steps
    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        # torch_xla cannot run under torch.inference_mode ("Cannot set
        # version_counter for inference tensor"): evaluate under no_grad instead.
        trainer = module.trainer
        if trainer.inference_mode:
            trainer.inference_mode = False
        module = self.precision.convert_module(module)
        return module.to(self._device)

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        self._optimizers = list(optimizers)
        return optimizers

    def batch_to_device(self, batch: Any) -> Any:
        # A step boundary: whatever the previous batch queued (an evaluation
        # step, for instance, which has no optimizer step) runs now as one graph.
        sync(self.xla)
        return self.precision.convert_input(move_to_device(batch, self._device))

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.precision.backward(loss, module)
        if self.world_size > 1:
            for optimizer in self._optimizers:
                self.xla.xm.reduce_gradients(optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        output = self.precision.optimizer_step(optimizer, closure)
        sync(self.xla)
        return output

    # ----------------------------------------------------------------- checkpoints
    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        return module.state_dict()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        """Written by global rank zero, with every tensor moved to the CPU first,
        so ``torch.load(path, weights_only=True)`` opens it anywhere."""
        if self.is_global_zero:
            sync(self.xla)
            self.checkpoint_io.save_checkpoint(_runtime.to_cpu(checkpoint), path)

    def teardown(self) -> None:
        if self._xla is not None:
            try:
                sync(self._xla)
            except Exception:
                pass
        self._optimizers = []
        self.accelerator.teardown() if self.accelerator is not None else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_xla"] = None  # modules do not cross process boundaries; each replica imports its own
        state["_optimizers"] = []
        return state


class XLADDPStrategy(XLAStrategy):
    """Data parallel over the local XLA devices: one replica per device,
    started by :class:`XLALauncher`; each replica sees its own slice of the
    data (a ``DistributedSampler`` is inserted) and averages gradients with
    the others after every backward pass.

    ``use_distributed_sampler`` (default ``True``): give each replica its own
    slice of every map-style ``DataLoader`` whose sampler is sequential or random.
    """

    name = "xla_ddp"

    def __init__(
        self,
        accelerator: Any = None,
        precision: Any = None,
        checkpoint_io: Any = None,
        environment: Any = None,
        devices: list[torch.device] | int | None = None,
        num_nodes: int = 1,
        *,
        use_distributed_sampler: bool = True,
        start_method: str = "spawn",
    ) -> None:
        # xla:0 until each replica's set-up picks its own device
        super().__init__(accelerator, precision, checkpoint_io, environment)
        if isinstance(devices, int):
            devices = [torch.device("xla", i) for i in range(devices)]
        self.parallel_devices: list[torch.device] = list(devices) if devices else []
        self.num_nodes = int(num_nodes)
        self.use_distributed_sampler = use_distributed_sampler
        self.start_method = start_method
        #: True inside a replica started by the launcher: ranks then come from the runtime.
        self._in_worker = False
        self._warned: set[str] = set()
        self.launcher = XLALauncher(self)

    # ----------------------------------------------------------------- topology
    @property
    def in_worker(self) -> bool:
        """Whether this is a replica a launcher started (ranks then come from the runtime)."""
        return self._in_worker

    def become_replica(self) -> None:
        """Called by a launcher in each replica it started, before the stage runs."""
        self._in_worker = True

    @property
    def expected_world_size(self) -> int:
        return max(len(self.parallel_devices), 1) * self.num_nodes

    @property
    def world_size(self) -> int:  # type: ignore[override]
        return int(self.xla.xr.world_size()) if self._in_worker else self.expected_world_size

    @property
    def global_rank(self) -> int:  # type: ignore[override]
        return int(self.xla.xr.global_ordinal()) if self._in_worker else 0

    @property
    def local_rank(self) -> int:  # type: ignore[override]
        return int(self.xla.xr.local_ordinal()) if self._in_worker else 0

    @property
    def node_rank(self) -> int:  # type: ignore[override]
        if not self._in_worker:
            return 0
        host_index = getattr(self.xla.xr, "host_index", None)
        return int(host_index()) if callable(host_index) else 0

    @property
    def is_global_zero(self) -> bool:  # type: ignore[override]
        return self.global_rank == 0

    def setup_environment(self) -> None:
        self._device = xla_device(self.xla)
        self.accelerator.setup_device(self._device)
        actual = self.world_size
        if self._in_worker and self.parallel_devices and actual != self.expected_world_size:
            self._warn_once(
                "world-size",
                f"xla_ddp: devices x num_nodes = {self.expected_world_size}, but the XLA runtime started {actual} replica(s); "
                "ember follows the runtime. Limit the devices it uses with torch_xla's variables (TPU_VISIBLE_CHIPS, CPU_NUM_DEVICES).",
            )

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = super().setup_module(module)
        if self.world_size > 1:
            # Every replica starts from rank zero's weights, seeded or not.
            self.xla.xm.broadcast_master_param(module)
        return module

    # ----------------------------------------------------------------- data
    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        if not self.use_distributed_sampler or self.world_size <= 1:
            return dataloader
        return split_across_ranks(dataloader, stage, self.world_size, self.global_rank, self._warn_once, name="xla_ddp")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    # ----------------------------------------------------------------- collectives
    def reduce(self, tensor: Any, op: str = "mean") -> Any:
        if self.world_size <= 1:
            return tensor
        name = str(op).lower()
        if name not in _REDUCE_TYPES:
            raise ValueError(f"reduce(op={op!r}): use 'mean', 'sum', 'max' or 'min'.")
        source = tensor if isinstance(tensor, torch.Tensor) else torch.tensor(tensor)
        value = source.detach()
        if name in ("mean", "avg") and not value.is_floating_point():
            value = value.float()
        xm = self.xla.xm
        reduced = xm.all_reduce(getattr(xm, _REDUCE_TYPES[name]), value.to(self._device))
        if name in ("mean", "avg"):
            reduced = reduced / self.world_size
        return reduced.to(source.device)

    def all_gather(self, tensor: Any) -> Any:
        if self.world_size <= 1:
            return super().all_gather(tensor)
        source = tensor if isinstance(tensor, torch.Tensor) else torch.tensor(tensor)
        gathered = self.xla.xm.all_gather(source.detach().unsqueeze(0).to(self._device), dim=0)
        return gathered.to(source.device)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if self.world_size <= 1:
            return obj
        payload = pickle.dumps(obj) if self.global_rank == src else b""
        received = self.xla.xm.rendezvous("ember.broadcast", payload)
        return pickle.loads(received[src])

    def barrier(self, name: str | None = None) -> None:
        if self.world_size > 1:
            self.xla.xm.rendezvous(f"ember.barrier.{name}" if name else "ember.barrier")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_warned"] = set()
        return state


#: The older name of :func:`ember.plugins.strategies.distributed_sampler.with_sampler`.
rebuild_with_sampler = with_sampler
