"""Every role provider the plugin manager registers keeps its role's contract.

The cases are read from the plugin manager at collection time (the built-ins
and the contrib ember-xla distribution), so a provider added to a built-in
plugin is checked with no change here; ``test_expected_providers`` fails when
one appears or disappears, so the list below (and each role's crafted inputs)
is kept honest. The checks themselves are :mod:`ember.testing`'s, the ones a
third-party plugin author runs on their own providers.
"""

from __future__ import annotations

import os
import sys
import unittest.mock
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from ember import testing
from ember.plugin_manager import AutoloadSettings, PluginManager, default_plugin_manager
from ember.roles import RoleRegistry

ROOT = Path(__file__).resolve().parents[2]
XLA_DIST = ROOT / "contrib" / "ember-xla"
ROLE_KINDS = ("accelerator", "strategy", "precision", "checkpoint_io", "environment")

#: what the built-in plugins register, per role
EXPECTED_BUILTIN = {
    "accelerator": {"cpu", "cuda", "gpu", "mps"},
    "strategy": {
        "single_device",
        "ddp",
        "ddp_spawn",
        "deepspeed",
        "deepspeed_stage_1",
        "deepspeed_stage_2",
        "deepspeed_stage_2_offload",
        "deepspeed_stage_3",
        "fsdp",
    },
    "precision": {"32-true", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true"},
    "checkpoint_io": {"torch"},
    "environment": {"local", "torchelastic", "slurm", "lsf", "mpi"},
}
#: what ember-xla adds on top
EXPECTED_XLA = {"accelerator": {"xla"}, "strategy": {"xla", "xla_ddp"}, "precision": {"xla-bf16"}}

#: a crafted launcher environment per cluster environment, and what it must read from it
CRAFTED_ENVIRONMENTS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "local": (
        {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "NODE_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "1234"},
        {"detect": True, "world_size": 4, "global_rank": 2, "local_rank": 0, "node_rank": 1, "main_address": "node7", "main_port": 1234},
    ),
    "torchelastic": (
        {
            "TORCHELASTIC_RUN_ID": "r1",
            "WORLD_SIZE": "8",
            "RANK": "5",
            "LOCAL_RANK": "1",
            "GROUP_RANK": "2",
            "MASTER_ADDR": "h0",
            "MASTER_PORT": "29501",
        },
        {"detect": True, "world_size": 8, "global_rank": 5, "local_rank": 1, "node_rank": 2, "main_address": "h0", "main_port": 29501},
    ),
    "slurm": (
        {
            "SLURM_NTASKS": "8",
            "SLURM_PROCID": "5",
            "SLURM_LOCALID": "1",
            "SLURM_NODEID": "2",
            "SLURM_NODELIST": "node[03-06]",
            "SLURM_JOB_ID": "1234",
            "SLURM_JOB_NAME": "train",
        },
        {
            "detect": True,
            "world_size": 8,
            "global_rank": 5,
            "local_rank": 1,
            "node_rank": 2,
            "main_address": "node03",
            "main_port": 15000 + 1234,
        },
    ),
    "lsf": (
        {
            "LSB_JOBID": "77",
            "JSM_NAMESPACE_RANK": "3",
            "JSM_NAMESPACE_SIZE": "4",
            "JSM_NAMESPACE_LOCAL_RANK": "1",
            "LSB_MCPU_HOSTS": "batch1 1 hostA 2 hostB 2",
        },
        {"detect": True, "world_size": 4, "global_rank": 3, "local_rank": 1, "main_address": "hostA", "main_port": 15000 + 77},
    ),
    "mpi": (
        {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"},
        {
            "detect": True,
            "world_size": 8,
            "global_rank": 5,
            "local_rank": 1,
            "node_rank": 1,
            "main_address": "127.0.0.1",
            "main_port": 29500,
        },
    ),
}

#: strategies whose checkpoints go through what set-up builds (DeepSpeed's engine writes them; FSDP loads
#: the weights into the sharded module), so a round-trip before set-up is not part of their contract
CHECKPOINTS_NEED_SETUP = ("deepspeed", "fsdp")


def builtin_registry() -> RoleRegistry:
    return default_plugin_manager(AutoloadSettings(autoload=False)).build_registry()


@contextmanager
def _xla_importable() -> Iterator[None]:
    """ember-xla from its source folder when it is not installed."""
    added = str(XLA_DIST) not in sys.path
    if added:
        sys.path.insert(0, str(XLA_DIST))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(XLA_DIST))


def xla_registry() -> RoleRegistry:
    with _xla_importable():
        import ember_xla

        pm: PluginManager = default_plugin_manager(AutoloadSettings(autoload=False))
        pm.register(ember_xla, name="ember_xla")
        return pm.build_registry()


BUILTIN = builtin_registry()
XLA = xla_registry()
CASES = [pytest.param(BUILTIN, e.kind, e.name, id=f"{e.kind}-{e.name}") for e in BUILTIN.entries() if e.kind in ROLE_KINDS] + [
    pytest.param(XLA, e.kind, e.name, id=f"xla-{e.kind}-{e.name}") for e in XLA.entries() if e.plugin == "ember_xla"
]


def test_expected_providers() -> None:
    """A provider added (or dropped) by a built-in plugin shows up here: add it
    to EXPECTED_BUILTIN (and, for an environment, to CRAFTED_ENVIRONMENTS)."""
    for kind in ROLE_KINDS:
        assert set(BUILTIN.names(kind)) == EXPECTED_BUILTIN[kind], kind
    added = {kind: {e.name for e in XLA.entries() if e.kind == kind and e.plugin == "ember_xla"} for kind in ROLE_KINDS}
    assert {k: v for k, v in added.items() if v} == EXPECTED_XLA
    assert len(CASES) == sum(map(len, EXPECTED_BUILTIN.values())) + sum(map(len, EXPECTED_XLA.values()))


@pytest.mark.parametrize(("registry", "kind", "name"), CASES)
def test_provider_conforms(registry: RoleRegistry, kind: str, name: str, tmp_path: Path) -> None:
    factory = registry.entry(kind, name).factory
    if kind == "accelerator":
        testing.check_accelerator_factory(factory, name)
    elif kind == "checkpoint_io":
        testing.check_checkpoint_io(factory(), tmp_path)
    elif kind == "environment":
        assert name in CRAFTED_ENVIRONMENTS, f"environment {name!r} has no crafted launcher environment in CRAFTED_ENVIRONMENTS"
        environ, expected = CRAFTED_ENVIRONMENTS[name]
        testing.check_cluster_environment(factory(), environ, expected)
        if name != "local":  # outside its launcher an environment does not claim the process
            with unittest.mock.patch.dict(os.environ, {}, clear=True):
                assert factory.detect() is False
    elif kind == "precision":
        from ember.plugins.precision.mixed import cpu_float16_supported

        if name == "16-mixed" and not cpu_float16_supported():  # older torch: refused with the fix, tested in test_mixed
            pytest.skip("this torch has no float16 CPU autocast")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "precision='16-mixed' runs on CPU", UserWarning)
            testing.check_precision(factory())
    elif kind == "strategy":
        kwargs = testing.strategy_role_kwargs(registry=registry)
        if registry is XLA:
            from ember_xla.accelerator import XLAAccelerator

            kwargs.update(accelerator=XLAAccelerator(), devices=[torch.device("xla", 0)])
        strategy = factory(**kwargs)
        roundtrip = not name.startswith(CHECKPOINTS_NEED_SETUP)
        testing.check_strategy(strategy, tmp_path if roundtrip else None, given=kwargs)
    else:  # pragma: no cover - ROLE_KINDS decides
        raise AssertionError(kind)


def test_one_process_strategy_is_fully_checked(tmp_path: Path) -> None:
    """The CPU strategies go through the one-process part (collectives, batch
    moves, checkpoint round-trip), not only their properties."""
    strategy = BUILTIN.create("strategy", "single_device", **testing.strategy_role_kwargs(registry=BUILTIN))
    seen: list[str] = []
    real_save = strategy.save_checkpoint

    def recording_save(checkpoint: dict[str, Any], path: str) -> None:
        seen.append(os.path.basename(path))
        real_save(checkpoint, path)

    strategy.save_checkpoint = recording_save
    testing.check_strategy(strategy, tmp_path)
    assert seen == ["strategy-conformance.ckpt"]
