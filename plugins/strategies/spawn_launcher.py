"""The spawn launcher of ``ddp``/``ddp_spawn``/``fsdp``/``deepspeed``: starts the
worker processes of a run with ``torch.multiprocessing`` (``spawn`` start
method) when no launcher (torchrun, srun) started them, and brings rank zero's
final weights, metrics, counters and return value back into the calling
process. A failed worker becomes a :class:`DDPWorkerError` naming its rank.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.distributed as dist

from ember.errors import UserError
from ember.launch import dumps, load_shipped_run, read_shipped_run, write_shipped_run
from ember.seed import rng_state, set_rng_state


class DDPWorkerError(RuntimeError):
    """A worker process of a spawned run failed; the message names its rank and error."""


# --------------------------------------------------------------------------- the spawn launcher


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SpawnableStrategy(Protocol):
    """What :class:`SpawnLauncher` uses of its strategy (``DDPStrategy`` has all of it)."""

    num_processes: int  # processes per node
    num_nodes: int
    environment: Any  # the cluster environment: node_rank(), main_address, main_port (several nodes)
    always_spawn: bool  # start processes even when one would do (ddp_spawn)
    # optional: start_method, "popen" (ember's spawn; the default), "spawn", "fork" or "forkserver"

    @property
    def uses_external_launcher(self) -> bool: ...

    @property
    def spawned_worker(self) -> bool: ...

    @property
    def ranks(self) -> tuple[int, int, int, int] | None: ...

    def adopt_spawned_ranks(self, global_rank: int, local_rank: int, node_rank: int, world_size: int) -> None: ...

    def gather_final_state(self, module: Any) -> None: ...

    def barrier(self, name: str | None = None) -> None: ...

    def teardown(self) -> None: ...


#: ``(strategy, group)``: the default ``torch.distributed`` group a strategy
#: made in this process and keeps after its run (a later ``trainer.test()``
#: uses it again), if one did: see :func:`keep_group` and
#: :func:`release_group_before_fork`.
_kept_group: tuple[Any, Any] | None = None


def keep_group(owner: Any) -> None:
    """Record that ``owner`` (a strategy whose ``teardown()`` destroys it)
    has just made this process's default process group and keeps it after
    its run; ``keep_group(None)`` once it is destroyed."""
    global _kept_group
    _kept_group = None if owner is None else (owner, dist.group.WORLD)


def release_group_before_fork() -> None:
    """A forked worker inherits this process's process group without the
    threads that serve it (gloo's), and its first collective then waits
    forever. Destroy the group an earlier ember run kept; refuse any other
    (the user's, or one made after ember's was destroyed), with what to do."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if _kept_group is None or _kept_group[1] is not dist.group.WORLD:
        raise UserError(
            "start_method='fork': this process already has a torch.distributed process group, which forked workers would "
            "inherit and hang on. Call torch.distributed.destroy_process_group() before fit, or use start_method='popen'."
        )
    _kept_group[0].teardown()


class SpawnLauncher:
    """Starts the processes of a run and brings rank zero's results back (the
    :class:`ember.roles.Launcher` of the built-in parallel strategies: ddp,
    ddp_spawn, fsdp and deepspeed). ``strategy`` is a :class:`SpawnableStrategy`:
    everything the launcher asks of it is public, so a third-party strategy can
    use this launcher as the built-ins do."""

    def __init__(self, strategy: SpawnableStrategy) -> None:
        self.strategy = strategy

    def should_launch(self) -> bool:
        s = self.strategy
        if s.spawned_worker or s.ranks is not None:
            return False
        if s.always_spawn:
            return True
        if s.uses_external_launcher:
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
        start_method = getattr(s, "start_method", "popen").replace("popen", "spawn")
        if start_method == "fork":
            release_group_before_fork()
        workdir = tempfile.mkdtemp(prefix="ember-ddp-")
        try:
            # The workers continue the caller's random state, as if the run had
            # stayed in this process: seed_everything before fit() then decides
            # dropout and shuffling in every rank, and identically on each.
            payload = dumps((function, args, rng_state()))
            context = torch.multiprocessing.start_processes(
                _worker,
                args=(payload, nprocs, node_rank, num_nodes, address, port, workdir),
                nprocs=nprocs,
                join=False,
                # DDPStrategy(start_method=...); Lightning's "popen" (re-running the script) is ember's spawn start
                start_method=start_method,
            )
            try:
                while not context.join():
                    pass
            except (torch.multiprocessing.ProcessRaisedException, torch.multiprocessing.ProcessExitedException) as exc:
                error = self._failure(exc, workdir, nprocs, node_rank, num_nodes)
                raise error from error.__cause__  # the worker's own exception, when it could be sent
            shipped = read_shipped_run(workdir)
            if shipped is None:
                if node_rank != 0:
                    return None  # rank zero lives on another node
                raise DDPWorkerError("ddp_spawn: rank 0 ended without an error but wrote no result.")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if trainer is not None:
            load_shipped_run(trainer, shipped)
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
            strategy.adopt_spawned_ranks(global_rank, local_rank, node_rank, world_size)
        result = function(*args)
        if strategy is not None:
            strategy.gather_final_state(trainer.module)  # every rank: it may be a collective
        if global_rank == 0:
            write_shipped_run(workdir, trainer, result)
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
