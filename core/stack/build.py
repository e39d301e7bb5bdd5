"""Importing class paths and instantiating the stack: the module, the data
module, callbacks and loggers, and the Trainer's keyword arguments."""

from __future__ import annotations

import copy
import importlib
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ember.roles import closest
from ember.stack.keys import LIST_SECTIONS, StackError, parse_key
from ember.stack.merge import Raw
from ember.stack.spec import Component, Stack


def ensure_on_path(directory: Path | None) -> None:
    if directory is None:
        return
    text = str(directory)
    if text not in sys.path:
        sys.path.insert(0, text)
        importlib.invalidate_caches()


def import_class_path(class_path: str, where: str = "class_path") -> Any:
    """Import ``module.path:Name`` (or ``module.path.Name``, or nested
    ``module:Outer.Inner``); errors are :class:`StackError` naming ``where``."""
    if ":" in class_path:
        modname, _, attr = class_path.partition(":")
    elif "." in class_path:
        modname, _, attr = class_path.rpartition(".")
    else:
        raise StackError(f"{where}: expected 'module.path:ClassName' or 'module.path.ClassName', got {class_path!r}.")
    if not modname or not attr:
        raise StackError(f"{where}: expected 'module.path:ClassName' or 'module.path.ClassName', got {class_path!r}.")
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and (modname == exc.name or modname.startswith(exc.name + ".")):
            raise StackError(
                f"{where}: cannot import {class_path!r}: no module named {exc.name!r}. Modules are looked up next to the "
                "stack file and on the Python path; check the spelling, or install the package that provides it."
            ) from None
        raise StackError(f"{where}: cannot import {class_path!r}: importing {modname!r} failed: ModuleNotFoundError: {exc}.") from None
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" (at {frame.filename}:{frame.lineno})" if frame else ""
        raise StackError(f"{where}: cannot import {class_path!r}: importing {modname!r} raised {type(exc).__name__}: {exc}{at}.") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            match = closest(part, public)
            hint = f" Did you mean {modname}:{match}?" if match and obj is module else (f" Did you mean {match!r}?" if match else "")
            raise StackError(
                f"{where}: cannot import {class_path!r}: {getattr(obj, '__name__', modname)!s} has no attribute {part!r}.{hint}"
            )
        obj = getattr(obj, part)
    return obj


def default_registry(stack: Stack, environ: Mapping[str, str] | None = None) -> Any:
    """The role registry of the plugins this stack loads (built-ins and the
    allowed entry points)."""
    from ember.plugin_manager import default_plugin_manager

    return default_plugin_manager(stack.autoload_settings(environ)).build_registry()


def where_is(stack: Stack, key: str) -> str:
    raw: Raw | None = stack._raw
    if raw is None:
        return f"{stack.origin(key)}: {key}"
    return raw.describe(parse_key(key))


def instantiate(stack: Stack, comp: Component, factory: Any, what: str) -> Any:
    try:
        return factory(**comp.init_args)
    except TypeError as exc:
        # most often init_args that do not match the signature
        raise StackError(f"{where_is(stack, comp.key + '.init_args')}: creating {what} failed: TypeError: {exc}.") from exc


def build(stack: Stack, registry: Any = None, environ: Mapping[str, str] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Import and create the stack's module, data module, callbacks and
    loggers. Returns ``(module, datamodule or None, trainer_kwargs)`` where
    ``trainer_kwargs`` is ready for ``ember.Trainer(**trainer_kwargs)``."""
    ensure_on_path(stack.import_root)
    module = datamodule = None
    if stack.model is not None:
        cls = import_class_path(stack.model.class_path or "", f"{where_is(stack, 'model.class_path')} = {stack.model.class_path!r}")
        module = instantiate(stack, stack.model, cls, stack.model.class_path or "")
    if stack.data is not None:
        cls = import_class_path(stack.data.class_path or "", f"{where_is(stack, 'data.class_path')} = {stack.data.class_path!r}")
        datamodule = instantiate(stack, stack.data, cls, stack.data.class_path or "")
    kwargs: dict[str, Any] = copy.deepcopy(stack.trainer)
    if (stack.callbacks or stack.loggers) and registry is None and any(c.name is not None for c in [*stack.callbacks, *stack.loggers]):
        registry = default_registry(stack, environ)
    made: dict[str, list[Any]] = {}
    for section, kind in LIST_SECTIONS.items():
        made[section] = []
        for comp in getattr(stack, section):
            if comp.name is not None:
                from ember.roles import UnknownNameError

                try:
                    factory = registry.entry(kind, comp.name).factory
                except UnknownNameError as exc:
                    raise StackError(f"{where_is(stack, comp.key + '.name')}: {exc}") from None
                made[section].append(instantiate(stack, comp, factory, f"{kind} {comp.name!r}"))
            else:
                cls = import_class_path(comp.class_path or "", f"{where_is(stack, comp.key + '.class_path')} = {comp.class_path!r}")
                made[section].append(instantiate(stack, comp, cls, comp.class_path or ""))
    if made["callbacks"]:
        kwargs["callbacks"] = made["callbacks"]
    if made["loggers"]:
        kwargs["logger"] = made["loggers"]
    if stack.plugins.autoload is not None:
        kwargs["autoload_plugins"] = stack.plugins.autoload
    if stack.plugins.enable:
        kwargs["plugins"] = list(stack.plugins.enable)
    if stack.plugins.disable:
        kwargs["disable_plugins"] = list(stack.plugins.disable)
    return module, datamodule, kwargs
