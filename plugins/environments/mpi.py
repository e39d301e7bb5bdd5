"""Processes started by an MPI launcher (``mpirun``/``mpiexec`` of Open MPI,
MPICH, Intel MPI or MVAPICH2), without ``mpi4py``.

Each MPI implementation tells a process where it sits through its own
variables; the first family present wins:

============  ==========================  ==========================  ===============================  ===============================
family        global rank                 world size                  local rank                       processes on this node
============  ==========================  ==========================  ===============================  ===============================
Open MPI      ``OMPI_COMM_WORLD_RANK``    ``OMPI_COMM_WORLD_SIZE``    ``OMPI_COMM_WORLD_LOCAL_RANK``   ``OMPI_COMM_WORLD_LOCAL_SIZE``
MVAPICH2      ``MV2_COMM_WORLD_RANK``     ``MV2_COMM_WORLD_SIZE``     ``MV2_COMM_WORLD_LOCAL_RANK``    ``MV2_COMM_WORLD_LOCAL_SIZE``
PMI (MPICH,   ``PMI_RANK``                ``PMI_SIZE``                ``MPI_LOCALRANKID`` or           ``MPI_LOCALNRANKS`` or
Intel MPI)                                                            ``PMI_LOCAL_RANK``               ``PMI_LOCAL_SIZE``
============  ==========================  ==========================  ===============================  ===============================

The node's rank is ``NODE_RANK`` when set, else the global rank divided by
the processes per node (MPI's default by-slot placement fills one node before
the next). The number of nodes is the world size divided by the processes per
node. MPI says nothing about the rendezvous address: ``MASTER_ADDR`` and
``MASTER_PORT`` are used when exported (``mpirun -x MASTER_ADDR=node01``),
else ``127.0.0.1`` and ``29500``, which only work on one node.
"""

from __future__ import annotations

import os

from ember.plugin_manager import hookimpl

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 29500

#: (family, rank, size, local rank candidates, local size candidates)
_FAMILIES: tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", ("OMPI_COMM_WORLD_LOCAL_RANK",), ("OMPI_COMM_WORLD_LOCAL_SIZE",)),
    ("mvapich", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", ("MV2_COMM_WORLD_LOCAL_RANK",), ("MV2_COMM_WORLD_LOCAL_SIZE",)),
    ("pmi", "PMI_RANK", "PMI_SIZE", ("MPI_LOCALRANKID", "PMI_LOCAL_RANK"), ("MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")),
)


def _family() -> tuple[str, str, str, tuple[str, ...], tuple[str, ...]] | None:
    for family in _FAMILIES:
        if os.environ.get(family[2]):
            return family
    return None


def _int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"mpi: {name}={value!r} is not an integer; the MPI launcher's environment looks damaged.") from None


def _first_int(names: tuple[str, ...]) -> int | None:
    for name in names:
        if os.environ.get(name):
            return _int(name)
    return None


class MPIEnvironment:
    name = "mpi"
    # Below SLURM (srun --mpi=pmi2 exports PMI_* too, and SLURM knows the node
    # list) and LSF (jsrun exports OMPI_* too); torchelastic above all.
    detect_priority = 5

    @staticmethod
    def detect() -> bool:
        return _family() is not None

    @property
    def family(self) -> str:
        """``"openmpi"``, ``"mvapich"`` or ``"pmi"``; ``"none"`` outside MPI."""
        found = _family()
        return found[0] if found else "none"

    def world_size(self) -> int:
        found = _family()
        return _int(found[2]) if found else 1

    def global_rank(self) -> int:
        found = _family()
        return _int(found[1]) if found and os.environ.get(found[1]) else 0

    def local_rank(self) -> int:
        found = _family()
        if found is None:
            return 0
        local = _first_int(found[3])
        if local is not None:
            return local
        per_node = self.processes_per_node()
        return self.global_rank() % per_node

    def processes_per_node(self) -> int:
        """Processes on this node (the whole world when MPI does not say)."""
        found = _family()
        if found is None:
            return 1
        size = _first_int(found[4])
        return max(1, size if size is not None else self.world_size())

    def node_rank(self) -> int:
        if os.environ.get("NODE_RANK"):
            return _int("NODE_RANK")
        return self.global_rank() // self.processes_per_node()

    def num_nodes(self) -> int:
        per_node = self.processes_per_node()
        return max(1, -(-self.world_size() // per_node))

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR") or DEFAULT_ADDRESS

    @property
    def main_port(self) -> int:
        return _int("MASTER_PORT") if os.environ.get("MASTER_PORT") else DEFAULT_PORT


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("environment", "mpi", MPIEnvironment)
