"""LSF (jsrun) and MPI cluster environments, read from a monkeypatched environment."""

from __future__ import annotations

from typing import Any

import pytest

import ember
from ember.plugins.environments.lsf import LSFEnvironment
from ember.plugins.environments.mpi import MPIEnvironment
from ember.resolve import detect_environment

_ALL = (
    "TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
    "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NODELIST", "SLURM_JOB_NODELIST",
    "SLURM_JOB_ID", "SLURM_JOB_NAME",
    "LSB_JOBID", "LSB_HOSTS", "LSB_MCPU_HOSTS", "LSB_DJOB_RANKFILE",
    "JSM_NAMESPACE_RANK", "JSM_NAMESPACE_SIZE", "JSM_NAMESPACE_LOCAL_RANK",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PMI_RANK", "PMI_SIZE", "PMI_LOCAL_RANK", "PMI_LOCAL_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ALL:
        monkeypatch.delenv(name, raising=False)


def setenv(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


def _registry():  # type: ignore[no-untyped-def]
    return ember.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)._registry


# --------------------------------------------------------------------------- LSF


def jsrun(monkeypatch: pytest.MonkeyPatch, rank: int, size: int, local: int) -> None:
    setenv(monkeypatch, LSB_JOBID="4242", JSM_NAMESPACE_RANK=rank, JSM_NAMESPACE_SIZE=size, JSM_NAMESPACE_LOCAL_RANK=local)


def test_lsf_reads_jsrun_ranks_and_the_rank_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    assert not LSFEnvironment.detect()
    setenv(monkeypatch, LSB_JOBID="4242")
    assert not LSFEnvironment.detect()  # a job, but not started by jsrun
    jsrun(monkeypatch, rank=5, size=8, local=1)
    rankfile = tmp_path / "ranks"
    rankfile.write_text("batch1\n" + "nodeA\n" * 4 + "nodeB\n" * 4)
    setenv(monkeypatch, LSB_DJOB_RANKFILE=rankfile)
    monkeypatch.setattr("socket.gethostname", lambda: "nodeB")
    env = LSFEnvironment()
    assert LSFEnvironment.detect()
    assert (env.world_size(), env.global_rank(), env.local_rank()) == (8, 5, 1)
    assert env.hosts() == ["nodeA", "nodeB"]  # the single-slot launch node is not a compute host
    assert env.node_rank() == 1 and env.num_nodes() == 2
    assert env.main_address == "nodeA"
    assert env.main_port == LSFEnvironment().main_port and 15000 <= env.main_port < 35000
    assert LSFEnvironment(skip_launch_node=False).hosts() == ["batch1", "nodeA", "nodeB"]
    setenv(monkeypatch, MASTER_ADDR="10.1.1.1", MASTER_PORT="1234")
    assert (env.main_address, env.main_port) == ("10.1.1.1", 1234)


def test_lsf_hosts_from_mcpu_hosts_and_lsb_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    jsrun(monkeypatch, rank=0, size=4, local=0)
    setenv(monkeypatch, LSB_MCPU_HOSTS="hostA 2 hostB 2", LSB_HOSTS="other1 other2")
    monkeypatch.setattr("socket.gethostname", lambda: "hostA.cluster.example")
    env = LSFEnvironment()
    assert env.hosts() == ["hostA", "hostB"]  # LSB_MCPU_HOSTS wins over LSB_HOSTS; no launch node here
    assert env.node_rank() == 0 and env.num_nodes() == 2  # the domain part of the host name is ignored
    monkeypatch.delenv("LSB_MCPU_HOSTS")
    setenv(monkeypatch, LSB_HOSTS="launch h1 h1 h2 h2")
    assert env.hosts() == ["h1", "h2"] and env.main_address == "h1"
    setenv(monkeypatch, LSB_MCPU_HOSTS="hostA 2 hostB")
    with pytest.raises(RuntimeError, match="LSB_MCPU_HOSTS"):
        env.hosts()


def test_lsf_missing_local_rank_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, LSB_JOBID="1", JSM_NAMESPACE_RANK=0, JSM_NAMESPACE_SIZE=2)
    with pytest.raises(RuntimeError, match="JSM_NAMESPACE_LOCAL_RANK"):
        LSFEnvironment().local_rank()


# --------------------------------------------------------------------------- MPI


def test_mpi_open_mpi_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not MPIEnvironment.detect()
    setenv(
        monkeypatch,
        OMPI_COMM_WORLD_RANK=6,
        OMPI_COMM_WORLD_SIZE=8,
        OMPI_COMM_WORLD_LOCAL_RANK=2,
        OMPI_COMM_WORLD_LOCAL_SIZE=4,
    )
    env = MPIEnvironment()
    assert MPIEnvironment.detect() and env.family == "openmpi"
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank(), env.num_nodes()) == (8, 6, 2, 1, 2)
    assert (env.main_address, env.main_port) == ("127.0.0.1", 29500)  # defaults: one node only
    setenv(monkeypatch, MASTER_ADDR="node01", MASTER_PORT="23456", NODE_RANK="3")
    assert (env.main_address, env.main_port, env.node_rank()) == ("node01", 23456, 3)


def test_mpi_pmi_and_mvapich_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, PMI_RANK=3, PMI_SIZE=4, MPI_LOCALRANKID=1, MPI_LOCALNRANKS=2)
    env = MPIEnvironment()
    assert env.family == "pmi"
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank(), env.num_nodes()) == (4, 3, 1, 1, 2)
    for name in ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name)
    setenv(monkeypatch, MV2_COMM_WORLD_RANK=1, MV2_COMM_WORLD_SIZE=2)
    assert env.family == "mvapich"
    # No local size: all processes are taken to be on one node.
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank(), env.num_nodes()) == (2, 1, 1, 0, 1)
    setenv(monkeypatch, MV2_COMM_WORLD_SIZE="two")
    with pytest.raises(RuntimeError, match="MV2_COMM_WORLD_SIZE"):
        env.world_size()


# --------------------------------------------------------------------------- detection order


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, "local"),
        ({"OMPI_COMM_WORLD_RANK": 0, "OMPI_COMM_WORLD_SIZE": 2}, "mpi"),
        # jsrun exports Open MPI's variables too: LSF knows more (hosts, port).
        ({"OMPI_COMM_WORLD_RANK": 0, "OMPI_COMM_WORLD_SIZE": 2, "LSB_JOBID": 7, "JSM_NAMESPACE_RANK": 0, "JSM_NAMESPACE_SIZE": 2}, "lsf"),
        # srun --mpi=pmi2 exports PMI_*: SLURM wins.
        ({"PMI_RANK": 0, "PMI_SIZE": 2, "SLURM_NTASKS": 2, "SLURM_JOB_NAME": "train"}, "slurm"),
        # torchrun inside an MPI or LSF job: torchrun's ranks count.
        (
            {"OMPI_COMM_WORLD_SIZE": 1, "LSB_JOBID": 7, "JSM_NAMESPACE_RANK": 0, "JSM_NAMESPACE_SIZE": 1, "TORCHELASTIC_RUN_ID": "x"},
            "torchelastic",
        ),
    ],
)
def test_detection_priority(monkeypatch: pytest.MonkeyPatch, variables: dict[str, Any], expected: str) -> None:
    registry = _registry()
    assert {"lsf", "mpi"} <= set(registry.names("environment"))
    setenv(monkeypatch, **variables)
    assert detect_environment(registry).name == expected


def test_ddp_under_mpirun_joins_instead_of_spawning(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, OMPI_COMM_WORLD_RANK=1, OMPI_COMM_WORLD_SIZE=4, OMPI_COMM_WORLD_LOCAL_RANK=1, OMPI_COMM_WORLD_LOCAL_SIZE=2)
    trainer = ember.Trainer(strategy="ddp", accelerator="cpu", devices=2, num_nodes=2, logger=False, enable_progress_bar=False)
    assert trainer.strategy.environment.name == "mpi"
    assert not trainer.strategy.launcher.should_launch()
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (4, 1, 1)
