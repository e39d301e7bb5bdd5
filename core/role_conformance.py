"""Behavioural conformance checks for role providers, served by :mod:`ember.testing`.

``isinstance(obj, ember.roles.Strategy)`` only says that the names exist. These
functions run a provider through its contract on the CPU and raise
:class:`RoleConformanceError` (an ``AssertionError``) naming the provider and
the broken promise (the strategy checks live in
:mod:`ember.role_conformance_strategy`). ember runs them on every built-in provider the plugin
manager registers (``tests/meta/test_role_conformance.py``); a plugin author
runs them on their own::

    from ember.testing import check_checkpoint_io

    def test_my_io(tmp_path):
        check_checkpoint_io(MyCheckpointIO(), tmp_path)
"""

from __future__ import annotations

import math
import os
import unittest.mock
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch

from ember import roles

__all__ = [
    "RoleConformanceError",
    "check_accelerator",
    "check_accelerator_factory",
    "check_checkpoint_io",
    "check_cluster_environment",
    "check_precision",
]


class RoleConformanceError(AssertionError):
    """A provider broke its role's contract; the message names it and the promise."""


def _fail(provider: Any, message: str) -> RoleConformanceError:
    return RoleConformanceError(f"{type(provider).__module__}.{type(provider).__qualname__}: {message}")


def _require(condition: bool, provider: Any, message: str) -> None:
    if not condition:
        raise _fail(provider, message)


def _check_protocol(provider: Any, protocol: type, role: str) -> None:
    if not isinstance(provider, protocol):
        members = [m for m in getattr(protocol, "__protocol_attrs__", ()) or () if not hasattr(provider, m)]
        detail = f" (missing: {', '.join(sorted(members))})" if members else ""
        raise _fail(provider, f"does not provide the {role} members of ember.roles.{protocol.__name__}{detail}.")


def _check_name(provider: Any) -> None:
    name = getattr(provider, "name", None)
    _require(isinstance(name, str) and bool(name), provider, f"name must be a non-empty str, got {name!r}.")


# --------------------------------------------------------------------------- accelerator


def check_accelerator(accelerator: Any) -> None:
    """``is_available()`` is a bool; an available accelerator parses
    ``devices=1`` into a list of ``torch.device``, sets the first one up, holds a
    tensor there (moved there and back, values kept) and tears down; an
    unavailable one explains itself through ``unavailable_reason()`` when it has it."""
    _check_protocol(accelerator, roles.Accelerator, "accelerator")
    _check_name(accelerator)
    available = accelerator.is_available()
    _require(type(available) is bool, accelerator, f"is_available() must return a bool, got {available!r}.")
    if not available:
        reason = getattr(accelerator, "unavailable_reason", None)
        if callable(reason):
            text = reason()
            _require(isinstance(text, str) and bool(text), accelerator, f"unavailable_reason() must say why (a str), got {text!r}.")
        return
    devices = accelerator.parse_devices(1)
    _require(
        isinstance(devices, list) and len(devices) == 1 and all(isinstance(d, torch.device) for d in devices),
        accelerator,
        f"parse_devices(1) must return a list of one torch.device, got {devices!r}.",
    )
    accelerator.setup_device(devices[0])
    try:
        source = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        placed = source.to(devices[0])
        _require(placed.device.type == devices[0].type, accelerator, f"a tensor moved to {devices[0]} sits on {placed.device}.")
        _require(torch.equal(placed.cpu(), source), accelerator, f"a tensor moved to {devices[0]} and back changed its values.")
    finally:
        accelerator.teardown()
    suggest = getattr(accelerator, "default_strategy", None)
    if callable(suggest):
        chosen = suggest(1, 1)
        _require(isinstance(chosen, str) and bool(chosen), accelerator, f"default_strategy(1, 1) must name a strategy, got {chosen!r}.")


def check_accelerator_factory(factory: Callable[[], Any], name: str) -> Any:
    """The registered factory of accelerator ``name``: ``accelerator="auto"``
    reads ``factory.is_available()`` (a bool). Where it is true the factory
    builds an accelerator that passes :func:`check_accelerator` (returned);
    where false, calling the factory either raises an error that names
    ``accelerator='<name>'`` or builds one whose ``is_available()`` is false."""
    probe = getattr(factory, "is_available", None)
    _require(
        callable(probe), factory, f"the factory registered as accelerator {name!r} needs an is_available() (accelerator='auto' calls it)."
    )
    available = probe()  # type: ignore[misc]
    _require(type(available) is bool, factory, f"{name}: factory.is_available() must return a bool, got {available!r}.")
    if available:
        accelerator = factory()
        check_accelerator(accelerator)
        return accelerator
    try:
        accelerator = factory()
    except Exception as exc:
        _require(
            f"accelerator={name!r}" in str(exc), factory, f"unavailable: the factory's error must name accelerator={name!r}, got: {exc}"
        )
        return None
    _require(
        accelerator.is_available() is False,
        accelerator,
        f"factory.is_available() is False but the built {name!r} accelerator says it is available.",
    )
    check_accelerator(accelerator)
    return accelerator


# --------------------------------------------------------------------------- precision


def _tiny_model() -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def check_precision(precision: Any) -> None:
    """On a tiny CPU model: ``convert_module`` returns a module; ``convert_input``
    keeps the batch's containers and its integer tensors; a forward pass inside
    ``forward_context()`` and ``backward`` give every parameter a finite
    gradient; ``unscale_gradients`` (unless ``scales_gradients`` is false) and
    ``optimizer_step`` change the parameters; ``state_dict()`` is a dict that
    ``load_state_dict`` takes back."""
    _check_protocol(precision, roles.Precision, "precision")
    _check_name(precision)
    module = precision.convert_module(_tiny_model())
    _require(
        isinstance(module, torch.nn.Module), precision, f"convert_module() must return a torch.nn.Module, got {type(module).__name__}."
    )
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(8, 4, generator=g), "y": torch.randn(8, 1, generator=g), "index": torch.arange(8)}
    converted = precision.convert_input(batch)
    _require(
        type(converted) is dict and set(converted) == set(batch),
        precision,
        f"convert_input() must keep a dict batch's keys, got {converted!r}.",
    )
    _require(converted["index"].dtype == torch.int64, precision, "convert_input() must leave integer tensors alone.")
    pair = precision.convert_input((batch["x"], batch["y"]))
    _require(
        type(pair) is tuple and len(pair) == 2,
        precision,
        f"convert_input() must keep a tuple batch a tuple of 2, got {type(pair).__name__}.",
    )
    context = precision.forward_context()
    _require(isinstance(context, AbstractContextManager), precision, f"forward_context() must return a context manager, got {context!r}.")
    with context:
        out = module(converted["x"])
        loss = torch.nn.functional.mse_loss(out.float(), converted["y"].float())
    _require(out.is_floating_point(), precision, "the forward pass inside forward_context() did not produce a floating-point tensor.")
    precision.backward(loss, module)
    params = [p for p in module.parameters() if p.requires_grad]
    _require(all(p.grad is not None for p in params), precision, "backward(loss, module) left a parameter without a gradient.")
    optimizer = torch.optim.SGD(params, lr=0.1)
    if roles.scales_gradients(precision):
        precision.unscale_gradients(optimizer)
    _require(all(bool(torch.isfinite(p.grad).all()) for p in params), precision, "gradients are not finite after backward (and unscaling).")
    before = [p.detach().clone() for p in params]
    precision.optimizer_step(optimizer)
    _require(
        any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True)),
        precision,
        "optimizer_step() did not change any parameter.",
    )
    state = precision.state_dict()
    _require(isinstance(state, dict), precision, f"state_dict() must return a dict, got {type(state).__name__}.")
    precision.load_state_dict(state)


# --------------------------------------------------------------------------- checkpoint IO


def _same(saved: Any, loaded: Any) -> bool:
    if isinstance(saved, torch.Tensor):
        return isinstance(loaded, torch.Tensor) and saved.dtype == loaded.dtype and torch.equal(saved, loaded.cpu())
    if isinstance(saved, Mapping):
        return isinstance(loaded, Mapping) and set(saved) == set(loaded) and all(_same(v, loaded[k]) for k, v in saved.items())
    if isinstance(saved, (list, tuple)):
        return (
            isinstance(loaded, (list, tuple)) and len(saved) == len(loaded) and all(_same(a, b) for a, b in zip(saved, loaded, strict=True))
        )
    if isinstance(saved, float) and math.isnan(saved):
        return isinstance(loaded, float) and math.isnan(loaded)
    return bool(saved == loaded)


def _checkpoint(step: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(step)
    return {
        "state_dict": {"layer.weight": torch.randn(3, 4, generator=g), "layer.bias": torch.zeros(3, dtype=torch.float64)},
        "optimizer_states": [{"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "global_step": step,
        "epoch": 1,
        "loops": {"fit": {"batches_seen": torch.tensor(step)}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_path": "a/b.ckpt", "best_model_score": torch.tensor(0.5)}},
        "hyper_parameters": {"lr": 0.1, "layers": [4, 3], "name": "tiny", "dropout": None},
    }


def check_checkpoint_io(io: Any, directory: str | os.PathLike[str]) -> None:
    """In ``directory``: a checkpoint (tensors of several dtypes, nested dicts
    and lists, numbers, strings, None) saved and loaded back is equal; saving
    again to the same path replaces it; ``remove_checkpoint`` makes the path go
    away and is quiet for a path that is already gone; loading a missing path
    raises."""
    _check_protocol(io, roles.CheckpointIO, "checkpoint IO")
    path = os.path.join(os.fspath(directory), "conformance.ckpt")
    first = _checkpoint(1)
    io.save_checkpoint(first, path)
    _require(os.path.exists(path), io, f"save_checkpoint(..., {path!r}) wrote nothing at that path.")
    loaded = io.load_checkpoint(path)
    _require(_same(first, loaded), io, "a checkpoint saved and loaded back differs from what was saved.")
    second = _checkpoint(2)
    io.save_checkpoint(second, path)
    _require(_same(second, io.load_checkpoint(path)), io, "saving to an existing path did not replace the checkpoint there.")
    io.remove_checkpoint(path)
    _require(not os.path.exists(path), io, f"remove_checkpoint({path!r}) left the path in place.")
    io.remove_checkpoint(path)  # already gone: nothing to do, no error
    try:
        io.load_checkpoint(path)
    except Exception:
        pass
    else:
        raise _fail(io, f"load_checkpoint({path!r}) of a missing path returned instead of raising.")


# --------------------------------------------------------------------------- cluster environment

_ENV_INTS = ("world_size", "global_rank", "local_rank", "node_rank")


def check_cluster_environment(
    environment: Any, environ: Mapping[str, str] | None = None, expected: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """With ``os.environ`` replaced by ``environ`` (nothing else set):
    ``detect()`` is a bool; ``world_size``, ``global_rank``, ``local_rank`` and
    ``node_rank`` return ints with ``0 <= global_rank < world_size``;
    ``main_address`` is a non-empty str and ``main_port`` an int port. Each
    entry of ``expected`` (``detect``, ``world_size``, ..., ``main_port``) must
    match. Returns what was read."""
    with unittest.mock.patch.dict(os.environ, dict(environ or {}), clear=True):
        # inside: isinstance on the protocol reads the properties, which read the environment
        _check_protocol(environment, roles.ClusterEnvironment, "cluster environment")
        _check_name(environment)
        seen: dict[str, Any] = {"detect": environment.detect()}
        for name in _ENV_INTS:
            seen[name] = getattr(environment, name)()
        seen["main_address"] = environment.main_address
        seen["main_port"] = environment.main_port
    _require(type(seen["detect"]) is bool, environment, f"detect() must return a bool, got {seen['detect']!r}.")
    for name in _ENV_INTS:
        value = seen[name]
        _require(type(value) is int and value >= 0, environment, f"{name}() must return an int >= 0, got {value!r}.")
    _require(seen["world_size"] >= 1, environment, f"world_size() must be at least 1, got {seen['world_size']}.")
    _require(
        seen["global_rank"] < seen["world_size"],
        environment,
        f"global_rank() {seen['global_rank']} is not below world_size() {seen['world_size']}.",
    )
    _require(
        isinstance(seen["main_address"], str) and bool(seen["main_address"]),
        environment,
        f"main_address must be a host name, got {seen['main_address']!r}.",
    )
    port = seen["main_port"]
    _require(type(port) is int and 0 < port < 65536, environment, f"main_port must be an int port (1-65535), got {port!r}.")
    for key, want in (expected or {}).items():
        _require(key in seen, environment, f"expected names {key!r}, which is not a checked member ({', '.join(seen)}).")
        _require(seen[key] == want, environment, f"{key} is {seen[key]!r} under the given environment; expected {want!r}.")
    return seen
