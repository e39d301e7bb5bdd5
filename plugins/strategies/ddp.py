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
import contextlib
import datetime
import io
import os
import pickle
import shutil
import socket
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

from ember.plugin_manager import hookimpl
from ember.plugins.strategies.single_device import SingleDeviceStrategy, move_to_device
from ember.seed import rng_state, set_rng_state
from ember.strategies import ParallelStrategy

_REDUCE_OPS = {"sum": "SUM", "mean": "SUM", "avg": "SUM", "max": "MAX", "min": "MIN"}


class DDPWorkerError(RuntimeError):
    """A worker process of a spawned run failed; the message names its rank and error."""


# --------------------------------------------------------------------------- the module wrapper


class _TrainingStepModule(torch.nn.Module):
    """What DDP wraps: its forward is the user's ``training_step``, so that the
    loop's ``placed(batch, batch_idx)`` goes through DDP (which is what makes
    the backward pass average gradients)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.module).training_step(self.module, *args, **kwargs)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while isinstance(module, (torch.nn.parallel.DistributedDataParallel, _TrainingStepModule)):
        module = module.module
    return module


# --------------------------------------------------------------------------- the strategy


class DDPStrategy(SingleDeviceStrategy, ParallelStrategy):
    """Distributed data parallel.

    ``use_distributed_sampler`` (default ``True``): give each process its own
    slice of every map-style ``DataLoader`` whose sampler is sequential or
    random. ``process_group_backend``: ``"gloo"``/``"nccl"`` (default: by
    device). ``timeout``: for collectives, as in ``init_process_group``.
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
        **ddp_kwargs: Any,
    ) -> None:
        self.accelerator = accelerator
        self.precision = precision
        self.checkpoint_io = checkpoint_io
        self.environment = environment
        if isinstance(devices, int):
            devices = [torch.device("cpu")] * devices
        self.parallel_devices: list[torch.device] | None = list(devices) if devices else None
        self.num_nodes = int(num_nodes)
        self.use_distributed_sampler = use_distributed_sampler
        self.process_group_backend = process_group_backend
        self.timeout = datetime.timedelta(seconds=timeout) if isinstance(timeout, (int, float)) else timeout
        self.ddp_kwargs = ddp_kwargs
        self._device = torch.device("cpu")
        self._needs_transfer = False
        # (global, local, node, world); set by setup_environment or by the spawn launcher
        self._ranks: tuple[int, int, int, int] | None = None
        self._spawned_worker = False
        self._owns_process_group = False
        self._manual_sync = False
        self._wrapped: Any = None
        self._warned_samplers: set[str] = set()
        self.launcher = _SpawnLauncher(self)

    # ----------------------------------------------------------------- topology
    @property
    def num_processes(self) -> int:
        """Processes per node."""
        if self.parallel_devices is not None:
            return len(self.parallel_devices)
        if self._uses_external_launcher():
            return max(1, self.environment.world_size() // max(self.num_nodes, 1))
        raise ValueError(
            f"{type(self).__name__} was built without devices, and no launcher (torchrun, srun) started this process, "
            "so ember does not know how many processes to start: pass devices=N to the strategy object "
            "(Trainer(devices=...) is not handed to strategy objects), or use strategy='ddp' with Trainer(devices=N)."
        )

    def _uses_external_launcher(self) -> bool:
        """Whether something outside ember started the processes of this job."""
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
    def world_size(self) -> int:  # type: ignore[override]
        if self._ranks is not None:
            return self._ranks[3]
        if self._uses_external_launcher():
            return self.environment.world_size()
        return self.num_processes * self.num_nodes

    @property
    def global_rank(self) -> int:  # type: ignore[override]
        if self._ranks is not None:
            return self._ranks[0]
        return self.environment.global_rank() if self._uses_external_launcher() else 0

    @property
    def local_rank(self) -> int:  # type: ignore[override]
        if self._ranks is not None:
            return self._ranks[1]
        return self.environment.local_rank() if self._uses_external_launcher() else 0

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
            if self._uses_external_launcher():
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
                os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
                os.environ.setdefault("MASTER_PORT", str(find_free_port()))
        global_rank, local_rank, _, world_size = self._ranks
        self._device = self._pick_device(local_rank)
        self._needs_transfer = self._device.type != "cpu"
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        self.accelerator.setup_device(self._device)
        if dist.is_available() and dist.is_initialized():
            return  # the user (or another library) made the group: use it, leave it
        if "MASTER_ADDR" not in os.environ:
            os.environ["MASTER_ADDR"] = str(self.environment.main_address)
        if "MASTER_PORT" not in os.environ:
            os.environ["MASTER_PORT"] = str(self.environment.main_port)
        backend = self.process_group_backend or ("nccl" if self._device.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": global_rank, "world_size": world_size}
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        dist.init_process_group(**kwargs)
        self._owns_process_group = True
        if not self._spawned_worker:
            atexit.register(self._teardown_at_exit)

    def _pick_device(self, local_rank: int) -> torch.device:
        devices = self.parallel_devices or []
        if devices and devices[0].type != "cpu":
            if local_rank < len(devices):
                return devices[local_rank]
            return torch.device(devices[0].type, local_rank)
        return devices[0] if devices else torch.device("cpu")

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = self.precision.convert_module(module)
        module = module.to(self._device)
        self._manual_sync = False
        if not any(p.requires_grad for p in module.parameters()):
            return module  # nothing to synchronise; DDP refuses such modules
        if not getattr(module, "automatic_optimization", True):
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
        wrapped = torch.nn.parallel.DistributedDataParallel(_TrainingStepModule(module), device_ids=device_ids, **self.ddp_kwargs)
        self._wrapped = wrapped
        return wrapped

    def backward(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        self.precision.backward(loss, module)
        if getattr(self, "_manual_sync", False) and self._group_ready():
            world = dist.get_world_size()
            for param in module.parameters():
                if param.grad is not None:
                    dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                    param.grad.div_(world)

    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        return _unwrap(module).state_dict()

    # ----------------------------------------------------------------- data
    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        if not self.use_distributed_sampler or self.world_size <= 1:
            return dataloader
        if not isinstance(dataloader, DataLoader):
            return dataloader
        if isinstance(dataloader.dataset, IterableDataset):
            return dataloader
        sampler = dataloader.sampler
        if isinstance(sampler, DistributedSampler):
            return dataloader
        custom_batch_sampler = dataloader.batch_sampler is not None and type(dataloader.batch_sampler).__name__ != "BatchSampler"
        if type(dataloader) is not DataLoader or custom_batch_sampler or type(sampler) not in (SequentialSampler, RandomSampler):
            what = (
                f"a DataLoader subclass ({type(dataloader).__name__})"
                if type(dataloader) is not DataLoader
                else f"a custom {'batch sampler' if custom_batch_sampler else 'sampler'} "
                f"({type(dataloader.batch_sampler if custom_batch_sampler else sampler).__name__})"
            )
            self._warn_once(
                what,
                f"ddp: the {stage} dataloader uses {what}, so ember did not insert a DistributedSampler: every process "
                "sees the data that loader yields. Split it across ranks yourself, or pass a plain DataLoader.",
            )
            return dataloader
        if isinstance(sampler, RandomSampler):
            if sampler.replacement or sampler._num_samples is not None:
                self._warn_once(
                    "random-replacement",
                    f"ddp: the {stage} dataloader samples with replacement or a custom num_samples; it was left as it is.",
                )
                return dataloader
            shuffle = True
        else:
            shuffle = False
        seed = int(os.environ.get("EMBER_GLOBAL_SEED", 0))
        distributed = DistributedSampler(
            dataloader.dataset, num_replicas=self.world_size, rank=self.global_rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        return _with_sampler(dataloader, distributed)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned_samplers:
            self._warned_samplers.add(key)
            warnings.warn(message, stacklevel=4)

    def batch_to_device(self, batch: Any) -> Any:
        if self._needs_transfer:
            batch = move_to_device(batch, self._device)
        return self.precision.convert_input(batch)

    # ----------------------------------------------------------------- collectives
    def _group_ready(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def reduce(self, tensor: Any, op: str = "mean") -> Any:
        if not self._group_ready():
            return tensor
        name = str(op).lower()
        if name not in _REDUCE_OPS:
            raise ValueError(f"reduce(op={op!r}): use 'mean', 'sum', 'max' or 'min'.")
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.tensor(tensor)
        out = tensor.detach().clone()
        if name in ("mean", "avg") and not out.is_floating_point():
            out = out.double() if out.dtype == torch.int64 else out.float()
        on = out.to(self._device) if out.device != self._device else out
        dist.all_reduce(on, op=getattr(dist.ReduceOp, _REDUCE_OPS[name]))
        if name in ("mean", "avg"):
            on = on / dist.get_world_size()
        return on.to(tensor.device) if on.device != tensor.device else on

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self._group_ready():
            return super().all_gather(tensor)
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.tensor(tensor)
        source = tensor.detach().contiguous().to(self._device)
        gathered = [torch.empty_like(source) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, source)
        return torch.stack(gathered).to(tensor.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order (checkpoints use it for per-rank RNG state)."""
        if not self._group_ready():
            return [obj]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered

    def no_backward_sync(self, module: torch.nn.Module) -> Any:
        """Skip the gradient all-reduce for backward passes inside the context:
        the kernel uses it for the batches of an accumulation window before the last."""
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            return module.no_sync()
        return contextlib.nullcontext()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self._group_ready():
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._device if self._device.type == "cuda" else None)
        return box[0]

    def barrier(self, name: str | None = None) -> None:
        if not self._group_ready():
            return
        if self._device.type == "cuda" and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self._device.index])
        else:
            dist.barrier()

    # ----------------------------------------------------------------- teardown
    def _teardown_at_exit(self) -> None:
        """Under torchrun/srun: wait (bounded) for the other ranks before destroying the
        group; a peer vanishing mid-teardown can abort gloo ("terminate called
        without an active exception") after all the work is done."""
        if self._owns_process_group and self._group_ready() and dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
            except Exception:
                pass
        self.teardown()

    def teardown(self) -> None:
        """Destroy the process group if ember created it. Safe to call twice."""
        if self._owns_process_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_process_group = False
        self._wrapped = None
        self.accelerator.teardown() if self.accelerator is not None else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_wrapped"] = None  # a DDP object does not cross process boundaries
        return state


class DDPSpawnStrategy(DDPStrategy):
    """``ddp`` whose processes ember always starts itself, with the spawn start method."""

    name = "ddp_spawn"
    always_spawn = True


def _with_sampler(loader: DataLoader, sampler: Any) -> DataLoader:
    """The same DataLoader with ``sampler`` in place of its own."""
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "sampler": sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": getattr(loader, "pin_memory_device", ""),
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    if hasattr(loader, "in_order"):
        kwargs["in_order"] = loader.in_order
    return DataLoader(loader.dataset, **kwargs)


# --------------------------------------------------------------------------- the spawn launcher


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ModulesByName(pickle.Pickler):
    """Pickles module objects (the trainer's plugin manager holds some) as an import by name."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            return _import_module, (obj.__name__,)
        return NotImplemented


def _import_module(name: str) -> types.ModuleType:
    import importlib

    return importlib.import_module(name)


def _dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _ModulesByName(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


class _SpawnLauncher:
    """Starts the processes of a run and brings rank zero's results back."""

    def __init__(self, strategy: DDPStrategy) -> None:
        self.strategy = strategy

    def should_launch(self) -> bool:
        s = self.strategy
        if s._spawned_worker or s._ranks is not None:
            return False
        if s.always_spawn:
            return True
        if s._uses_external_launcher():
            return False
        return s.num_processes * s.num_nodes > 1

    def launch(self, function: Callable[..., Any], *args: Any) -> Any:
        s = self.strategy
        trainer = getattr(function, "__self__", None)
        nprocs = s.num_processes
        num_nodes = s.num_nodes
        env = s.environment
        node_rank = env.node_rank() if num_nodes > 1 else 0
        address = os.environ.get("MASTER_ADDR") or (env.main_address if num_nodes > 1 else "127.0.0.1")
        if os.environ.get("MASTER_PORT"):
            port = int(os.environ["MASTER_PORT"])
        else:
            port = env.main_port if num_nodes > 1 else find_free_port()
        workdir = tempfile.mkdtemp(prefix="ember-ddp-")
        try:
            # The workers continue the caller's random state, as if the run had
            # stayed in this process: seed_everything before fit() then decides
            # dropout and shuffling in every rank, and identically on each.
            payload = _dumps((function, args, rng_state()))
            context = torch.multiprocessing.start_processes(
                _worker,
                args=(payload, nprocs, node_rank, num_nodes, address, port, workdir),
                nprocs=nprocs,
                join=False,
                start_method="spawn",
            )
            try:
                while not context.join():
                    pass
            except (torch.multiprocessing.ProcessRaisedException, torch.multiprocessing.ProcessExitedException) as exc:
                error = self._failure(exc, workdir, nprocs, node_rank, num_nodes)
                raise error from error.__cause__  # the worker's own exception, when it could be sent
            result_path = os.path.join(workdir, "result.pt")
            if not os.path.isfile(result_path):
                if node_rank != 0:
                    return None  # rank zero lives on another node
                raise DDPWorkerError("ddp_spawn: rank 0 ended without an error but wrote no result.")
            shipped = torch.load(result_path, weights_only=False)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if trainer is not None:
            _load_shipped(trainer, shipped)
        return shipped["return"]

    def _failure(self, exc: BaseException, workdir: str, nprocs: int, node_rank: int, num_nodes: int) -> DDPWorkerError:
        world = nprocs * num_nodes
        reports = []
        for name in os.listdir(workdir):
            if name.startswith("error-"):
                try:
                    with open(os.path.join(workdir, name), "rb") as f:
                        reports.append(pickle.load(f))
                except Exception:
                    continue
        if reports:
            first = min(reports, key=lambda r: r["time"])  # the cause; others often fail because it died
            others = sorted(r["rank"] for r in reports if r is not first)
            message = (
                f"ddp: rank {first['rank']} (of {world}) failed with {first['type']}: {first['message']}"
                + (f" (rank(s) {', '.join(map(str, others))} failed after it)" if others else "")
                + f"\n\nTraceback in rank {first['rank']}:\n{first['traceback']}"
            )
            error = DDPWorkerError(message)
            original = first.get("exception")
            if original is not None:
                try:
                    error.__cause__ = pickle.loads(original)
                except Exception:
                    pass
            return error
        if isinstance(exc, torch.multiprocessing.ProcessExitedException):
            rank = node_rank * nprocs + exc.error_index
            if os.path.exists(os.path.join(workdir, f"done-{rank}")):
                return DDPWorkerError(
                    f"ddp: rank {rank} (of {world}) finished its work but crashed while exiting, with exit code "
                    f"{exc.exit_code}{_signal_name(exc)}; the other ranks were stopped, so the results were not collected."
                )
            return DDPWorkerError(f"ddp: rank {rank} (of {world}) died with exit code {exc.exit_code}{_signal_name(exc)}.")
        rank = node_rank * nprocs + getattr(exc, "error_index", 0)
        return DDPWorkerError(f"ddp: rank {rank} (of {world}) failed:\n{exc}")


def _signal_name(exc: Any) -> str:
    sig = getattr(exc, "signal_name", None)
    return f" ({sig})" if sig else ""


def _worker(local_rank: int, payload: bytes, nprocs: int, node_rank: int, num_nodes: int, address: str, port: int, workdir: str) -> None:
    global_rank = node_rank * nprocs + local_rank
    world_size = nprocs * num_nodes
    os.environ.update(
        MASTER_ADDR=address,
        MASTER_PORT=str(port),
        RANK=str(global_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        NODE_RANK=str(node_rank),
    )
    strategy = None
    try:
        function, args, caller_rng = pickle.loads(payload)
        set_rng_state(caller_rng)
        trainer = getattr(function, "__self__", None)
        strategy = trainer.strategy if trainer is not None else None
        if strategy is not None:
            strategy._spawned_worker = True
            strategy._ranks = (global_rank, local_rank, node_rank, world_size)
        result = function(*args)
        if global_rank == 0:
            shipped = _ship(trainer, result)
            path = os.path.join(workdir, "result.pt")
            torch.save(shipped, path + ".tmp")
            os.replace(path + ".tmp", path)
        open(os.path.join(workdir, f"done-{global_rank}"), "w").close()
        if strategy is not None:
            strategy.barrier("ddp_spawn_exit")  # leave together: a peer vanishing mid-teardown can abort gloo
            strategy.teardown()
            strategy = None
    except BaseException as exc:
        report = {
            "rank": global_rank,
            "time": time.time(),
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
            "exception": None,
        }
        try:
            report["exception"] = pickle.dumps(exc)
            pickle.loads(report["exception"])
        except Exception:
            report["exception"] = None
        with open(os.path.join(workdir, f"error-{global_rank}.pkl"), "wb") as f:
            pickle.dump(report, f)
        raise
    finally:
        if strategy is not None:
            try:
                strategy.teardown()
            except Exception:
                pass
    # The work is done and reported. Skip interpreter finalisation: with gloo's
    # threads around it occasionally aborts ("terminate called without an active
    # exception"), which would turn a finished run into a failed one.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value) if not hasattr(value, "_fields") else type(value)(*(_to_cpu(v) for v in value))
    return value


def _ship(trainer: Any, result: Any) -> dict[str, Any]:
    """What rank zero sends back to the process that called fit/validate/test/predict."""
    if trainer is None:
        return {"return": _to_cpu(result)}
    module = trainer.module
    callbacks = []
    for cb in trainer.callbacks:
        try:
            callbacks.append((type(cb).__name__, cb.state_dict()))
        except Exception:
            callbacks.append((type(cb).__name__, None))
    return {
        "return": _to_cpu(result),
        "state_dict": _to_cpu(trainer.strategy.module_state_dict(module)) if module is not None else None,
        "callback_metrics": _to_cpu(dict(trainer.callback_metrics)),
        "progress_bar_metrics": dict(trainer.progress_bar_metrics),
        "logged_metrics": dict(trainer.logged_metrics),
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "should_stop": trainer.should_stop,
        "status": trainer.state.status,
        "callbacks": callbacks,
    }


def _load_shipped(trainer: Any, shipped: dict[str, Any]) -> None:
    module = trainer.module
    if module is not None and shipped.get("state_dict") is not None:
        module.load_state_dict(shipped["state_dict"])
    trainer._callback_metrics = dict(shipped.get("callback_metrics", {}))
    trainer.logged_metrics = dict(shipped.get("logged_metrics", {}))
    trainer._last_eval_progress = dict(shipped.get("progress_bar_metrics", {}))
    trainer.global_step = shipped.get("global_step", trainer.global_step)
    trainer.current_epoch = shipped.get("current_epoch", trainer.current_epoch)
    trainer.should_stop = shipped.get("should_stop", False)
    trainer.state.status = shipped.get("status", "finished")
    for cb, (name, state) in zip(trainer.callbacks, shipped.get("callbacks", []), strict=False):
        if state and type(cb).__name__ == name:
            try:
                cb.load_state_dict(state)
            except Exception as exc:  # the weights matter more than a callback's bookkeeping
                warnings.warn(f"ddp_spawn: could not restore {name}'s state in the main process: {exc}", stacklevel=3)


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("strategy", "ddp", DDPStrategy)
    registry.add("strategy", "ddp_spawn", DDPSpawnStrategy)
