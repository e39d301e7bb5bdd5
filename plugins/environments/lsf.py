"""Processes started by IBM Spectrum LSF's ``jsrun`` (``bsub`` jobs, as on Summit-class machines).

``jsrun`` gives every process ``JSM_NAMESPACE_RANK`` (global rank),
``JSM_NAMESPACE_SIZE`` (world size) and ``JSM_NAMESPACE_LOCAL_RANK``; LSF
gives the job ``LSB_JOBID`` and its hosts. This environment recognises itself
by ``LSB_JOBID`` together with ``JSM_NAMESPACE_RANK``/``JSM_NAMESPACE_SIZE``.

The job's compute hosts, in order, come from the first of:

- ``LSB_DJOB_RANKFILE``: a file with one host name per line (per slot);
- ``LSB_MCPU_HOSTS``: ``"hostA 42 hostB 42"`` (host, slot count pairs);
- ``LSB_HOSTS``: ``"hostA hostA hostB"`` (one entry per slot).

LSF lists the launch (batch) node first on systems where it is a separate
machine that runs no training process: by default (``skip_launch_node=None``)
the first host is dropped when it holds a single slot and other hosts follow.
Pass ``LSFEnvironment(skip_launch_node=True/False)`` to decide yourself.

The main address is the first compute host and the port is derived from
``LSB_JOBID``, so every process of a job agrees on both without talking;
``MASTER_ADDR`` / ``MASTER_PORT`` override them. The node's rank is the
position of this machine's host name among the compute hosts.
"""

from __future__ import annotations

import os
import socket

from ember.plugin_manager import hookimpl
from ember.plugins.environments.slurm import port_for_job


def _slots() -> list[str]:
    """One entry per slot, launch node included, as LSF lists them."""
    rankfile = os.environ.get("LSB_DJOB_RANKFILE")
    if rankfile:
        try:
            with open(rankfile) as f:
                return [line.strip() for line in f if line.strip()]
        except OSError as exc:
            raise RuntimeError(f"lsf: cannot read LSB_DJOB_RANKFILE={rankfile!r}: {exc}") from None
    mcpu = os.environ.get("LSB_MCPU_HOSTS", "").split()
    if mcpu:
        if len(mcpu) % 2:
            raise RuntimeError(f"lsf: cannot read LSB_MCPU_HOSTS={os.environ['LSB_MCPU_HOSTS']!r}: expected 'host count' pairs.")
        return [host for host, count in zip(mcpu[::2], mcpu[1::2], strict=True) for _ in range(int(count))]
    return os.environ.get("LSB_HOSTS", "").split()


def _required(name: str) -> int:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"LSB_JOBID and JSM_NAMESPACE_* are set, so this process looks started by jsrun, but {name} is not set. "
            "Start the processes with jsrun (one per device)."
        )
    return int(value)


class LSFEnvironment:
    name = "lsf"
    # Below torchelastic (torchrun inside a job wins), above MPI (jsrun exports OMPI_* too).
    detect_priority = 9

    def __init__(self, skip_launch_node: bool | None = None) -> None:
        self.skip_launch_node = skip_launch_node

    @staticmethod
    def detect() -> bool:
        return "LSB_JOBID" in os.environ and "JSM_NAMESPACE_RANK" in os.environ and "JSM_NAMESPACE_SIZE" in os.environ

    def hosts(self) -> list[str]:
        """The job's compute hosts, each once, in LSF's order."""
        slots = _slots()
        unique = list(dict.fromkeys(slots))
        skip = self.skip_launch_node
        if skip is None:
            skip = len(unique) > 1 and slots.count(unique[0]) == 1
        return unique[1:] if skip and len(unique) > 1 else unique

    def world_size(self) -> int:
        return _required("JSM_NAMESPACE_SIZE")

    def global_rank(self) -> int:
        return _required("JSM_NAMESPACE_RANK")

    def local_rank(self) -> int:
        return _required("JSM_NAMESPACE_LOCAL_RANK")

    def node_rank(self) -> int:
        hosts = self.hosts()
        here = socket.gethostname()
        for candidate in (here, here.split(".")[0]):
            if candidate in hosts:
                return hosts.index(candidate)
        short = [h.split(".")[0] for h in hosts]
        if here.split(".")[0] in short:
            return short.index(here.split(".")[0])
        return 0

    def num_nodes(self) -> int:
        return max(1, len(self.hosts()))

    @property
    def main_address(self) -> str:
        if os.environ.get("MASTER_ADDR"):
            return os.environ["MASTER_ADDR"]
        hosts = self.hosts()
        return hosts[0] if hosts else "127.0.0.1"

    @property
    def main_port(self) -> int:
        if os.environ.get("MASTER_PORT"):
            return int(os.environ["MASTER_PORT"])
        return port_for_job(os.environ.get("LSB_JOBID", "0"))


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("environment", "lsf", LSFEnvironment)
