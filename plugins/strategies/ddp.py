"""``ddp`` and ``ddp_spawn``: data-parallel training with ``torch.distributed``.

Every process holds a full copy of the module wrapped in
``DistributedDataParallel``, sees its own slice of the data (a
``DistributedSampler`` is inserted) and averages gradients with the others in
the backward pass. The backend is ``gloo`` on CPU and ``nccl`` on CUDA.

Who starts the processes:

- ``ddp`` under a launcher (``torchrun``, ``srun``: ``RANK`` or a world size
  above one in the environment): every process runs the user's script; ember
  reads its rank from the cluster environment and joins the process group.
- ``ddp`` with no launcher, and ``ddp_spawn`` always: ember starts
  ``devices`` processes itself (``torch.multiprocessing`` with the ``spawn``
  start method), each runs the stage on its own copy of the trainer, and
  rank zero's final weights, metrics, step counters and return value are
  loaded back into the calling process's module and trainer.
"""

from __future__ import annotations

import atexit
import datetime
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ember.plugin_manager import hookimpl
from ember.plugins.strategies.ddp_collectives import DDPCollectives
from ember.plugins.strategies.ddp_comm import averaging_optimizers, check_comm_options, register_comm_hook
from ember.plugins.strategies.distributed_sampler import split_across_ranks
from ember.plugins.strategies.rank_failure import as_timeout, on_rank_failure
from ember.plugins.strategies.spawn_launcher import DDPWorkerError, SpawnLauncher, find_free_port, keep_group  # noqa: F401  (re-exported)
from ember.strategies import ParallelStrategy, lightning_aliases
from ember.tensors import move_to_device

# --------------------------------------------------------------------------- the module wrapper


class TrainingStepModule(torch.nn.Module):
    """What DDP wraps: its forward is the user's ``training_step``, so that the
    loop's ``placed(batch, batch_idx)`` goes through DDP (which is what makes
    the backward pass average gradients). It calls the module's own
    ``training_step`` attribute, so a compiled one installed on the object
    (``Compile(training_step=True)``) is the one that runs."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.training_step(*args, **kwargs)


def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside ``DistributedDataParallel`` / :class:`TrainingStepModule` wrappers."""
    while isinstance(module, (torch.nn.parallel.DistributedDataParallel, TrainingStepModule)):
        module = module.module
    return module


# --------------------------------------------------------------------------- the strategy


class DDPStrategy(DDPCollectives, ParallelStrategy):
    """Distributed data parallel.

    ``use_distributed_sampler`` (default ``True``): give each process its own
    slice of every map-style ``DataLoader`` whose sampler is sequential or
    random. ``process_group_backend``: ``"gloo"``/``"nccl"`` (default: by
    device). ``timeout``: for collectives (seconds or a ``timedelta``; default
    10 minutes, see :mod:`ember.plugins.strategies.rank_failure`).
    ``devices`` may be an int when the strategy object is built by hand
    (``Trainer(devices=...)`` is not handed to strategy objects).
    Other keywords (``find_unused_parameters``, ``static_graph``,
    ``gradient_as_bucket_view``, ...) go to ``DistributedDataParallel``.
    """

    name = "ddp"
    always_spawn = False  # ddp_spawn: start processes even under a launcher-less environment check

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
        process_group_backend: str | None = None,
        timeout: datetime.timedelta | float | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: Any = None,
        precision_plugin: Any = None,
        ddp_comm_state: object | None = None,
        ddp_comm_hook: Callable[..., Any] | None = None,
        ddp_comm_wrapper: Callable[..., Any] | None = None,
        model_averaging_period: int | None = None,
        start_method: str = "popen",
        **ddp_kwargs: Any,
    ) -> None:
        devices, environment, precision = lightning_aliases(
            devices, environment, precision, parallel_devices, cluster_environment, precision_plugin, type(self).__name__
        )
        if isinstance(devices, int):
            devices = [torch.device("cpu")] * devices
        super().__init__(accelerator, list(devices) if devices else None, environment, checkpoint_io, precision)
        self.num_nodes = int(num_nodes)
        self.use_distributed_sampler = use_distributed_sampler
        self.process_group_backend = process_group_backend
        self.timeout = as_timeout(timeout)
        #: The exception this rank raised, once it raised: collectives then raise at once (no waiting for peers).
        self.failed: BaseException | None = None
        self.ddp_kwargs = ddp_kwargs
        check_comm_options(ddp_comm_hook, ddp_comm_state, ddp_comm_wrapper, model_averaging_period)
        self.ddp_comm_state, self.ddp_comm_hook, self.ddp_comm_wrapper = ddp_comm_state, ddp_comm_hook, ddp_comm_wrapper
        self.model_averaging_period = model_averaging_period
        if start_method not in ("popen", "spawn", "fork", "forkserver"):
            raise ValueError(f"DDPStrategy(start_method={start_method!r}): use 'popen', 'spawn', 'fork' or 'forkserver'.")
        self.start_method = start_method
        self._device = torch.device("cpu")
        self._needs_transfer = False
        # (global, local, node, world); set by setup_environment or by the spawn launcher
        self._ranks: tuple[int, int, int, int] | None = None
        self._spawned_worker = False
        self._owns_process_group = False
        self._manual_sync = False
        self._wrapped: Any = None
        self._warned_samplers: set[str] = set()
        self.launcher = SpawnLauncher(self)

    # ----------------------------------------------------------------- topology
    @property
    def num_processes(self) -> int:
        """Processes per node."""
        if self.parallel_devices is not None:
            return len(self.parallel_devices)
        if self.uses_external_launcher:
            return max(1, self.environment.world_size() // max(self.num_nodes, 1))
        raise ValueError(
            f"{type(self).__name__} was built without devices, and no launcher (torchrun, srun) started this process, "
            "so ember does not know how many processes to start: pass devices=N to the strategy object "
            "(Trainer(devices=...) is not handed to strategy objects), or use strategy='ddp' with Trainer(devices=N)."
        )

    @property
    def uses_external_launcher(self) -> bool:
        """Whether something outside ember (``torchrun``, ``srun``: ``RANK`` or a
        world size above one in the environment) started the processes of this
        job. Never for ``ddp_spawn``, whose processes ember always starts."""
        if self.always_spawn:
            return False
        env = self.environment
        if env is not None and getattr(env, "name", "") != "local":
            try:
                return env.world_size() > 1 or "RANK" in os.environ
            except Exception:
                return False
        return "RANK" in os.environ

    @property
    def ranks(self) -> tuple[int, int, int, int] | None:
        """``(global rank, local rank, node rank, world size)`` of this process once
        known (after ``setup_environment``, or in a worker a launcher started),
        else ``None``."""
        return self._ranks

    @property
    def spawned_worker(self) -> bool:
        """Whether this process is a worker that a launcher (ember's spawn
        launcher, or a third party's) started: see :meth:`adopt_spawned_ranks`."""
        return self._spawned_worker

    def adopt_spawned_ranks(self, global_rank: int, local_rank: int, node_rank: int, world_size: int) -> None:
        """Called by a launcher in each worker process it started, before the
        stage runs: the strategy takes these ranks instead of asking the
        cluster environment, and leaves the teardown at exit to the launcher."""
        self._spawned_worker = True
        self._ranks = (global_rank, local_rank, node_rank, world_size)

    def gather_final_state(self, module: torch.nn.Module | None) -> None:
        """Called by the spawn launcher on every rank once the stage ran in a
        worker, before rank zero ships the run back (:func:`ember.launch.ship_run`).
        A strategy whose ``module_state_dict`` is a collective (fsdp, ZeRO-3)
        gathers the full weights here, so rank zero can ship them on its own.
        DDP holds full weights on every rank: nothing to do."""

    @property
    def world_size(self) -> int:  # type: ignore[override]
        if self._ranks is not None:
            return self._ranks[3]
        if self.uses_external_launcher:
            return self.environment.world_size()
        return self.num_processes * self.num_nodes

    @property
    def global_rank(self) -> int:  # type: ignore[override]
        if self._ranks is not None:
            return self._ranks[0]
        return self.environment.global_rank() if self.uses_external_launcher else 0

    @property
    def local_rank(self) -> int:  # type: ignore[override]
        if self._ranks is not None:
            return self._ranks[1]
        return self.environment.local_rank() if self.uses_external_launcher else 0

    @property
    def node_rank(self) -> int:  # type: ignore[override]
        if self._ranks is not None:
            return self._ranks[2]
        return self.environment.node_rank() if self.environment is not None else 0

    @property
    def is_global_zero(self) -> bool:  # type: ignore[override]
        return self.global_rank == 0

    @property
    def root_device(self) -> torch.device:
        return self._device

    # ----------------------------------------------------------------- set-up
    def setup_environment(self) -> None:
        if self._ranks is None:
            if self.uses_external_launcher:
                env = self.environment
                self._ranks = (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size())
                expected = (len(self.parallel_devices) if self.parallel_devices else 0) * self.num_nodes
                if expected and expected != self._ranks[3]:
                    warnings.warn(
                        f"The launcher started {self._ranks[3]} processes, but devices x num_nodes = {expected}; "
                        f"ember follows the launcher (world size {self._ranks[3]}).",
                        stacklevel=2,
                    )
            else:
                # One process and no launcher (devices=1 with strategy='ddp'): a group of one.
                self._ranks = (0, 0, 0, 1)
        global_rank, local_rank, _, world_size = self._ranks
        self._device = self._pick_device(local_rank)
        self._needs_transfer = self._device.type != "cpu"
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        self.accelerator.setup_device(self._device)
        if dist.is_available() and dist.is_initialized():
            return  # the user (or another library) made the group: use it, leave it
        backend = self.process_group_backend or ("nccl" if self._device.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": global_rank, "world_size": world_size}
        if world_size == 1 and not self._spawned_worker and not self.uses_external_launcher and "MASTER_PORT" not in os.environ:
            # A group of one on a free port of its own, not written into os.environ,
            # where a later run in this process (its launcher, its workers) would find it.
            kwargs["init_method"] = f"tcp://127.0.0.1:{find_free_port()}"
        else:
            if "MASTER_ADDR" not in os.environ:
                os.environ["MASTER_ADDR"] = str(self.environment.main_address)
            if "MASTER_PORT" not in os.environ:
                os.environ["MASTER_PORT"] = str(self.environment.main_port)
        kwargs["timeout"] = self.timeout
        dist.init_process_group(**kwargs)
        self._owns_process_group = True
        if not self._spawned_worker:
            atexit.register(self._teardown_at_exit)
            keep_group(self)  # outlives the run: a later fork must not inherit it

    def _pick_device(self, local_rank: int) -> torch.device:
        devices = self.parallel_devices or []
        if devices and devices[0].type != "cpu":
            if local_rank < len(devices):
                return devices[local_rank]
            return torch.device(devices[0].type, local_rank)
        return devices[0] if devices else torch.device("cpu")

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        manual = not module.automatic_optimization  # the user's Module's, before the precision converts it
        module = self.precision.convert_module(module)
        module = module.to(self._device)
        self._manual_sync = False
        if not any(p.requires_grad for p in module.parameters()):
            return module  # nothing to synchronise; DDP refuses such modules
        if manual:
            # Manual optimization calls training_step directly and runs the backward
            # inside it, which DDP's forward/backward bookkeeping does not allow.
            # Start from rank zero's weights, as DDP would, and average the
            # gradients after each backward instead (see backward()).
            self._manual_sync = True
            if self._group_ready():
                with torch.no_grad():
                    for tensor in [*module.parameters(), *module.buffers()]:
                        dist.broadcast(tensor.data, src=0)
            return module
        device_ids = [self._device.index] if self._device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(TrainingStepModule(module), device_ids=device_ids, **self.ddp_kwargs)
        register_comm_hook(wrapped, self.ddp_comm_hook, self.ddp_comm_state, self.ddp_comm_wrapper, self.num_processes)
        self._wrapped = wrapped
        return wrapped

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        return averaging_optimizers(optimizers, self.ddp_comm_state, self.model_averaging_period)

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.precision.backward(loss, module)
        if getattr(self, "_manual_sync", False) and self._group_ready():
            world = dist.get_world_size()
            for param in module.parameters():
                if param.grad is not None:
                    dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                    param.grad.div_(world)

    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        return unwrap_module(module).state_dict()

    # ----------------------------------------------------------------- data
    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        if not self.use_distributed_sampler or self.world_size <= 1:
            return dataloader
        return split_across_ranks(dataloader, stage, self.world_size, self.global_rank, self._warn_once)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned_samplers:
            self._warned_samplers.add(key)
            warnings.warn(message, stacklevel=5)

    def batch_to_device(self, batch: Any) -> Any:
        if self._needs_transfer:
            batch = move_to_device(batch, self._device)
        return self.precision.convert_input(batch)

    # ----------------------------------------------------------------- teardown
    def _teardown_at_exit(self) -> None:
        """Under torchrun/srun: wait (bounded) for the other ranks before destroying the
        group; a peer vanishing mid-teardown can abort gloo ("terminate called
        without an active exception") after all the work is done. Not after a
        failure: a rank that raised leaves at once, so the launcher sees it."""
        failing = self.failed is not None or getattr(sys, "last_value", None) is not None  # last_value: an uncaught exception
        if not failing and self._owns_process_group and self._group_ready() and dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
            except Exception:
                pass
        self.teardown()

    def teardown(self) -> None:
        """Destroy the process group if ember created it. Safe to call twice."""
        if self._owns_process_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
            if not self._spawned_worker:
                keep_group(None)
        self._owns_process_group = False
        self._wrapped = None
        self.accelerator.teardown() if self.accelerator is not None else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_wrapped"] = None  # a DDP object does not cross process boundaries
        state["failed"] = None
        return state


class DDPSpawnStrategy(DDPStrategy):
    """``ddp`` whose processes ember always starts itself, with the spawn start method."""

    name = "ddp_spawn"
    always_spawn = True


@hookimpl(tryfirst=True)
def on_exception(trainer, exception):  # type: ignore[no-untyped-def]
    """A rank that raises stops taking part in collectives, before any other
    ``on_exception`` implementation (a checkpoint save) could wait for its peers."""
    if isinstance(trainer.strategy, DDPStrategy):
        on_rank_failure(trainer.strategy, exception)


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("strategy", "ddp", DDPStrategy)
    registry.add("strategy", "ddp_spawn", DDPSpawnStrategy)
