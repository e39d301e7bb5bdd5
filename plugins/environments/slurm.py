"""Processes started by SLURM (``srun``, or ``sbatch`` with ``--ntasks``).

SLURM gives every task ``SLURM_PROCID`` (global rank), ``SLURM_NTASKS``
(world size), ``SLURM_LOCALID`` (rank on the node) and ``SLURM_NODEID``. The
main address is the first host of ``SLURM_NODELIST`` (bracket ranges such as
``node[01-04]`` are understood) and the port is derived from
``SLURM_JOB_ID``, so every task of a job agrees on both without talking.
``MASTER_ADDR`` / ``MASTER_PORT`` override them when set.

Interactive allocations (``salloc`` then a shell; the job name is ``bash`` or
``interactive``) are not treated as SLURM-launched: there the user starts
one process and ember launches the rest.
"""

from __future__ import annotations

import os
import re

from ember.plugin_manager import hookimpl

INTERACTIVE_JOB_NAMES = ("bash", "interactive")
_PORT_BASE = 15000
_PORT_SPAN = 20000  # ports 15000..34999


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: ``"node[01-04],gpu7"`` → ``"node01"``,
    ``"rack[2-3]-n[5,7]"`` → ``"rack2-n5"``, ``"a,b"`` → ``"a"``."""
    nodelist = nodelist.strip()
    if not nodelist:
        raise ValueError("The SLURM node list is empty.")
    # The first item ends at the first comma outside brackets.
    depth = 0
    end = len(nodelist)
    for i, ch in enumerate(nodelist):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            end = i
            break
    item = nodelist[:end]

    def first_of_group(match: re.Match[str]) -> str:
        first_range = match.group(1).split(",")[0]
        return first_range.split("-")[0]

    host = re.sub(r"\[([^\]]*)\]", first_of_group, item)
    if "[" in host or "]" in host or not host:
        raise ValueError(f"Cannot read the SLURM node list {nodelist!r}.")
    return host


def port_for_job(job_id: str | int) -> int:
    """A port every task of job ``job_id`` derives identically."""
    digits = re.sub(r"\D", "", str(job_id))  # array jobs look like 1234_5
    return _PORT_BASE + (int(digits) % _PORT_SPAN if digits else 0)


class SLURMEnvironment:
    name = "slurm"
    detect_priority = 10

    @staticmethod
    def detect() -> bool:
        if "SLURM_NTASKS" not in os.environ:
            return False
        return os.environ.get("SLURM_JOB_NAME", "") not in INTERACTIVE_JOB_NAMES

    def world_size(self) -> int:
        return int(os.environ.get("SLURM_NTASKS", 1))

    def global_rank(self) -> int:
        return int(os.environ.get("SLURM_PROCID", 0))

    def local_rank(self) -> int:
        return int(os.environ.get("SLURM_LOCALID", 0))

    def node_rank(self) -> int:
        return int(os.environ.get("SLURM_NODEID", 0))

    @property
    def main_address(self) -> str:
        if os.environ.get("MASTER_ADDR"):
            return os.environ["MASTER_ADDR"]
        nodelist = os.environ.get("SLURM_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
        if not nodelist:
            return "127.0.0.1"
        return first_host(nodelist)

    @property
    def main_port(self) -> int:
        if os.environ.get("MASTER_PORT"):
            return int(os.environ["MASTER_PORT"])
        job_id = os.environ.get("SLURM_JOB_ID")
        return port_for_job(job_id) if job_id else 12910


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("environment", "slurm", SLURMEnvironment)
