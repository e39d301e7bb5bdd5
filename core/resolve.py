"""Choosing the single-provider roles of a run, once, by name."""

from __future__ import annotations

from typing import Any

from ember.roles import CheckpointIO, ClusterEnvironment, Precision, RoleRegistry

PRECISION_ALIASES = {
    32: "32-true", "32": "32-true", "32-true": "32-true",
    64: "64-true", "64": "64-true", "64-true": "64-true",
    16: "16-mixed", "16": "16-mixed", "bf16": "bf16-mixed",
}  # fmt: skip


def split_plugins(plugins: Any) -> tuple[dict[str, Any], list[Any], list[str]]:
    """Sort the Trainer's ``plugins`` argument into role providers (precision,
    cluster environment, checkpoint IO objects), hook-implementing plugins, and
    names of entry-point plugins to enable."""
    items = plugins if isinstance(plugins, (list, tuple)) else ([plugins] if plugins is not None else [])
    role_overrides: dict[str, Any] = {}
    hook_plugins: list[Any] = []
    enable_names: list[str] = []
    for item in items:
        if isinstance(item, str):
            enable_names.append(item)
        elif isinstance(item, Precision):
            role_overrides["precision"] = item
        elif isinstance(item, ClusterEnvironment):
            role_overrides["environment"] = item
        elif isinstance(item, CheckpointIO):
            role_overrides["checkpoint_io"] = item
        else:
            hook_plugins.append(item)
    return role_overrides, hook_plugins, enable_names


def resolve_strategy(
    registry: RoleRegistry, accelerator: Any, strategy: Any, devices: Any, precision: Any, overrides: dict[str, Any], num_nodes: int = 1
) -> Any:
    """The strategy, with its accelerator, precision, checkpoint IO and cluster
    environment, chosen by name through the registry (or given as objects)."""
    if isinstance(accelerator, str):
        name = auto_accelerator(registry) if accelerator == "auto" else accelerator
        accelerator_obj = registry.create("accelerator", name)
        if not accelerator_obj.is_available():
            reason = getattr(accelerator_obj, "unavailable_reason", None)
            detail = f" {reason()}" if callable(reason) else ""
            raise RuntimeError(
                f"accelerator={name!r} was requested but is not available on this machine.{detail} Use accelerator='auto' or 'cpu'."
            )
    else:
        accelerator_obj = accelerator
    device_list = accelerator_obj.parse_devices(devices)
    precision_obj = overrides.get("precision")
    if precision_obj is None:
        precision_name = PRECISION_ALIASES.get(precision if precision is not None else "32-true", precision)
        precision_obj = registry.create("precision", str(precision_name))
    checkpoint_io = overrides.get("checkpoint_io") or registry.create("checkpoint_io", "torch")
    environment = overrides.get("environment") or detect_environment(registry)
    options: dict[str, Any] = {}
    if isinstance(strategy, dict):  # a stack's [trainer.strategy] table: name = "ddp", init_args = {timeout = 120}
        unknown = sorted(set(strategy) - {"name", "init_args"})
        if unknown or not isinstance(strategy.get("name", "auto"), str) or not isinstance(strategy.get("init_args", {}), dict):
            raise ValueError(f'strategy={strategy!r}: a strategy table holds name = "<registered name>" and init_args = {{...}} only.')
        options = dict(strategy.get("init_args", {}))
        strategy = strategy.get("name", "auto")
    if not isinstance(strategy, str):
        for attr, value in (
            ("accelerator", accelerator_obj),
            ("precision", precision_obj),
            ("checkpoint_io", checkpoint_io),
            ("environment", environment),
        ):
            if getattr(strategy, attr, None) is None:
                setattr(strategy, attr, value)
        return strategy
    name = strategy
    suggest = getattr(accelerator_obj, "default_strategy", None)
    if strategy == "auto" and callable(suggest):
        # Hardware with its own engines (XLA, ...) names the strategy it needs.
        name = suggest(len(device_list), num_nodes)
    elif strategy == "auto":
        if len(device_list) > 1 or num_nodes > 1:
            name = "ddp"  # resolved through the registry like any other name
        else:
            name = "single_device"
    kwargs: dict[str, Any] = {
        "accelerator": accelerator_obj,
        "precision": precision_obj,
        "checkpoint_io": checkpoint_io,
        "environment": environment,
    }
    if name == "single_device" and len(device_list) != 1:
        raise ValueError(f"strategy='single_device' needs one device; devices={devices!r} gives {len(device_list)}.")
    kwargs["devices"] = device_list
    kwargs["num_nodes"] = num_nodes
    return registry.create("strategy", name, **kwargs, **options)


def auto_accelerator(registry: RoleRegistry) -> str:
    """The available registered accelerator with the highest ``auto_priority``."""
    candidates = []
    for name in registry.names("accelerator"):
        factory = registry.entry("accelerator", name).factory
        if getattr(factory, "is_available", lambda: False)():
            candidates.append((getattr(factory, "auto_priority", 0), name))
    return max(candidates)[1] if candidates else "cpu"


def detect_environment(registry: RoleRegistry) -> Any:
    """The registered cluster environment that detects itself, else ``local``."""
    found = []
    for name in registry.names("environment"):
        factory = registry.entry("environment", name).factory
        if name != "local" and getattr(factory, "detect", lambda: False)():
            found.append((getattr(factory, "detect_priority", 0), name))
    return registry.create("environment", max(found)[1] if found else "local")
