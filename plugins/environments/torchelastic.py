"""Processes started by ``torchrun`` (``torch.distributed.run``, TorchElastic).

torchrun exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``GROUP_RANK``
(the node's rank), ``MASTER_ADDR`` and ``MASTER_PORT`` to every process it
starts, and ``TORCHELASTIC_RUN_ID``, which is how this environment recognises
itself.
"""

from __future__ import annotations

import os

from ember.plugin_manager import hookimpl


def _required(name: str) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        raise RuntimeError(
            f"TORCHELASTIC_RUN_ID is set, so this process looks started by torchrun, but {name} is not set. "
            "Start the script with `torchrun --nproc_per_node=N script.py` (or unset TORCHELASTIC_RUN_ID)."
        )
    return value


class TorchElasticEnvironment:
    name = "torchelastic"
    # Wins over SLURM: `srun torchrun ...` is common, and then torchrun's ranks are the ones that count.
    detect_priority = 20

    @staticmethod
    def detect() -> bool:
        return "TORCHELASTIC_RUN_ID" in os.environ

    def world_size(self) -> int:
        return int(_required("WORLD_SIZE"))

    def global_rank(self) -> int:
        return int(_required("RANK"))

    def local_rank(self) -> int:
        return int(_required("LOCAL_RANK"))

    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0)))

    @property
    def main_address(self) -> str:
        return _required("MASTER_ADDR")

    @property
    def main_port(self) -> int:
        return int(_required("MASTER_PORT"))


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("environment", "torchelastic", TorchElasticEnvironment)
