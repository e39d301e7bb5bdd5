"""Cluster environments: what torchrun and SLURM put in the environment, read back."""

from __future__ import annotations

import pytest

import ember
from ember.plugins.environments.local import LocalEnvironment
from ember.plugins.environments.slurm import SLURMEnvironment, first_host, port_for_job
from ember.plugins.environments.torchelastic import TorchElasticEnvironment
from ember.resolve import detect_environment

_ALL = (
    "TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
    "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NODELIST", "SLURM_JOB_NODELIST",
    "SLURM_JOB_ID", "SLURM_JOB_NAME",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ALL:
        monkeypatch.delenv(name, raising=False)


def _registry():  # type: ignore[no-untyped-def]
    return ember.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)._registry


def test_torchelastic_reads_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not TorchElasticEnvironment.detect()
    for name, value in {
        "TORCHELASTIC_RUN_ID": "abc",
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "GROUP_RANK": "2",
        "MASTER_ADDR": "10.0.0.7",
        "MASTER_PORT": "29400",
    }.items():
        monkeypatch.setenv(name, value)
    assert TorchElasticEnvironment.detect()
    env = TorchElasticEnvironment()
    assert (env.global_rank(), env.world_size(), env.local_rank(), env.node_rank()) == (5, 8, 1, 2)
    assert (env.main_address, env.main_port) == ("10.0.0.7", 29400)
    assert detect_environment(_registry()).name == "torchelastic"


def test_torchelastic_names_a_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    with pytest.raises(RuntimeError, match="WORLD_SIZE is not set"):
        TorchElasticEnvironment().world_size()


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("node01", "node01"),
        ("node[01-04]", "node01"),
        ("node[07,09-12]", "node07"),
        ("gpu[3-4],cpu[1-2]", "gpu3"),
        ("a,b[1-2]", "a"),
        ("rack[2-3]-n[005-008]", "rack2-n005"),
        ("host-1.example.org", "host-1.example.org"),
    ],
)
def test_first_host_of_a_slurm_node_list(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_slurm_port_is_derived_from_the_job_id() -> None:
    assert port_for_job("123456") == port_for_job(123456)
    assert 15000 <= port_for_job("987654321") < 35000
    assert port_for_job("1234_7") == port_for_job("12347")  # array jobs
    assert port_for_job("1") != port_for_job("2")


def test_slurm_reads_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not SLURMEnvironment.detect()
    for name, value in {
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "6",
        "SLURM_LOCALID": "2",
        "SLURM_NODEID": "1",
        "SLURM_NODELIST": "node[03-04]",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train.sh",
    }.items():
        monkeypatch.setenv(name, value)
    assert SLURMEnvironment.detect()
    env = SLURMEnvironment()
    assert (env.global_rank(), env.world_size(), env.local_rank(), env.node_rank()) == (6, 8, 2, 1)
    assert env.main_address == "node03"
    assert env.main_port == port_for_job("4242")
    monkeypatch.setenv("MASTER_ADDR", "10.1.1.1")
    monkeypatch.setenv("MASTER_PORT", "23456")
    assert (env.main_address, env.main_port) == ("10.1.1.1", 23456)
    assert detect_environment(_registry()).name == "slurm"


@pytest.mark.parametrize("job_name", ["bash", "interactive"])
def test_interactive_slurm_jobs_are_not_detected(monkeypatch: pytest.MonkeyPatch, job_name: str) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", job_name)
    assert not SLURMEnvironment.detect()
    assert detect_environment(_registry()).name == "local"


def test_torchrun_inside_slurm_follows_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "job", "TORCHELASTIC_RUN_ID": "x"}.items():
        monkeypatch.setenv(name, value)
    assert detect_environment(_registry()).name == "torchelastic"


def test_nothing_set_means_local() -> None:
    env = detect_environment(_registry())
    assert isinstance(env, LocalEnvironment)
    assert (env.global_rank(), env.world_size()) == (0, 1)
