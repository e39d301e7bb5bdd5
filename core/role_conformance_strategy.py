"""Conformance checks for strategies (see :mod:`ember.role_conformance`; served
by :mod:`ember.testing`): what a strategy promises as constructed, and with one
process what it does."""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping
from typing import Any

import torch

from ember import role_conformance as rc
from ember import roles


def strategy_role_kwargs(devices: list[torch.device] | None = None, registry: roles.RoleRegistry | None = None) -> dict[str, Any]:
    """What the trainer hands a strategy factory on one CPU: the ``cpu``
    accelerator, ``32-true`` precision, ``torch`` checkpoint IO and the
    ``local`` environment from ``registry`` (default: the plugin manager's),
    ``devices`` (default one CPU) and ``num_nodes=1``."""
    if registry is None:
        from ember.plugin_manager import default_plugin_manager

        registry = default_plugin_manager().build_registry()
    return {
        "accelerator": registry.create("accelerator", "cpu"),
        "precision": registry.create("precision", "32-true"),
        "checkpoint_io": registry.create("checkpoint_io", "torch"),
        "environment": registry.create("environment", "local"),
        "devices": devices if devices is not None else [torch.device("cpu")],
        "num_nodes": 1,
    }


_ROLE_ATTRS = (
    ("accelerator", roles.Accelerator),
    ("precision", roles.Precision),
    ("checkpoint_io", roles.CheckpointIO),
    ("environment", roles.ClusterEnvironment),
)


def check_strategy(strategy: Any, directory: str | os.PathLike[str] | None = None, *, given: Mapping[str, Any] | None = None) -> None:
    """A strategy as constructed, before any process group starts: its role
    attributes satisfy their protocols (and, but for a precision the strategy
    may wrap, are the objects in ``given``, the keywords it was built with); ``root_device`` is a ``torch.device``; the
    ranks are ints with ``0 <= global_rank < world_size`` and ``is_global_zero``
    agrees; a ``launcher`` is ``None`` or has ``should_launch() -> bool`` and
    ``launch``; the optional capability flags are bools. With one process and an
    available accelerator it also reduces, gathers, broadcasts, passes the
    barrier, moves a nested batch to ``root_device`` (containers kept) and,
    with ``directory``, saves, loads and removes a checkpoint."""
    rc._check_protocol(strategy, roles.Strategy, "strategy")
    rc._check_name(strategy)
    for attr, protocol in _ROLE_ATTRS:
        value = getattr(strategy, attr)
        rc._require(
            isinstance(value, protocol),
            strategy,
            f"strategy.{attr} ({type(value).__name__}) does not satisfy ember.roles.{protocol.__name__}.",
        )
        if given is not None and attr in given and attr != "precision":  # a strategy may wrap the precision (DeepSpeed)
            rc._require(value is given[attr], strategy, f"strategy.{attr} is not the {attr} it was constructed with.")
    device = strategy.root_device
    rc._require(isinstance(device, torch.device), strategy, f"root_device must be a torch.device, got {device!r}.")
    ranks = {name: getattr(strategy, name) for name in ("world_size", "global_rank", "local_rank")}
    for name, value in ranks.items():
        rc._require(type(value) is int and value >= 0, strategy, f"{name} must be an int >= 0, got {value!r}.")
    rc._require(
        0 <= ranks["global_rank"] < ranks["world_size"],
        strategy,
        f"global_rank {ranks['global_rank']} is not below world_size {ranks['world_size']}.",
    )
    rc._require(
        strategy.is_global_zero is (ranks["global_rank"] == 0), strategy, "is_global_zero must be a bool equal to global_rank == 0."
    )
    launcher = getattr(strategy, "launcher", None)
    if launcher is not None:
        members = all(callable(getattr(launcher, m, None)) for m in ("should_launch", "launch"))
        rc._require(members, strategy, "strategy.launcher must provide should_launch() and launch(function, *args), or be None.")
        rc._require(type(launcher.should_launch()) is bool, strategy, "launcher.should_launch() must return a bool.")
    for flag in ("moves_batches", "use_distributed_sampler"):
        if hasattr(strategy, flag):
            rc._require(
                type(getattr(strategy, flag)) is bool, strategy, f"strategy.{flag} must be a bool, got {getattr(strategy, flag)!r}."
            )
    if ranks["world_size"] != 1 or not strategy.accelerator.is_available():
        return
    _check_one_process(strategy, device, directory)


def _check_one_process(strategy: Any, device: torch.device, directory: str | os.PathLike[str] | None) -> None:
    value = torch.tensor([1.5, -2.0])
    reduced = strategy.reduce(value.to(device))
    rc._require(torch.equal(reduced.cpu(), value), strategy, f"with one process, reduce(t) must equal t, got {reduced!r}.")
    gathered = strategy.all_gather(value.to(device))
    rc._require(
        gathered.numel() == value.numel() and torch.equal(gathered.reshape(-1).cpu(), value),
        strategy,
        f"with one process, all_gather(t) must hold t, got {gathered!r}.",
    )
    obj = {"epoch": 3, "path": "a.ckpt"}
    rc._require(strategy.broadcast(obj) == obj, strategy, "with one process, broadcast(obj) must return obj.")
    strategy.barrier("conformance")
    Pair = collections.namedtuple("Pair", "x y")  # noqa: PYI024
    batch = {"pair": Pair(torch.ones(2), torch.zeros(2, dtype=torch.int64)), "items": [torch.ones(1)], "tag": "b"}
    moved = strategy.batch_to_device(batch)
    rc._require(
        type(moved) is dict and type(moved["pair"]) is Pair and type(moved["items"]) is list and moved["tag"] == "b",
        strategy,
        f"batch_to_device() must keep the batch's containers, got {moved!r}.",
    )
    rc._require(
        moved["pair"].x.device.type == device.type, strategy, f"batch_to_device() left a tensor on {moved['pair'].x.device}, not {device}."
    )
    if directory is not None:
        path = os.path.join(os.fspath(directory), "strategy-conformance.ckpt")
        checkpoint = rc._checkpoint(3)
        strategy.save_checkpoint(checkpoint, path)
        rc._require(
            rc._same(checkpoint, strategy.load_checkpoint(path)), strategy, "a checkpoint saved and loaded through the strategy differs."
        )
        strategy.remove_checkpoint(path)
        rc._require(not os.path.exists(path), strategy, "remove_checkpoint() left the checkpoint in place.")
