"""The default cluster environment: one process on this machine, or whatever
``MASTER_ADDR``/``MASTER_PORT``/``WORLD_SIZE``/``RANK`` say."""

from __future__ import annotations

import os

from ember.plugin_manager import hookimpl


class LocalEnvironment:
    name = "local"

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", 1))

    def global_rank(self) -> int:
        return int(os.environ.get("RANK", 0))

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", 29500))


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("environment", "local", LocalEnvironment)
