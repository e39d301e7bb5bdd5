"""Importing class paths and instantiating the stack: the module, the data
module, callbacks and loggers, and the Trainer's keyword arguments."""

from __future__ import annotations

import copy
import importlib
import re
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ember.stack.keys import LIST_SECTIONS, StackError, parse_key
from ember.stack.merge import Raw
from ember.stack.spec import Component, Stack
from ember.suggest import closest, did_you_mean


def ensure_on_path(directory: Path | None) -> None:
    if directory is None:
        return
    text = str(directory)
    if text not in sys.path:
        sys.path.insert(0, text)
        importlib.invalidate_caches()


def module_suggestion(missing: str, root: Path | None) -> str:
    """`` Did you mean 'x'?`` for the importable module closest to the dotted
    name ``missing``: among the modules next to the stack file (``root``) and
    the installed top-level ones, or among the submodules of its package."""
    import pkgutil

    parent, _, last = missing.rpartition(".")
    if parent:
        try:
            package = importlib.import_module(parent)
            names = [m.name for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
        except Exception:
            return ""
        return did_you_mean(last, names, prefix=parent + ".")
    if root is not None:
        local = [m.name for m in pkgutil.iter_modules([str(root)])]
        match = closest(last, local)
        if match:
            return f" Did you mean {match!r} (next to the stack file, in {root})?"
    return did_you_mean(last, [m.name for m in pkgutil.iter_modules() if not m.name.startswith("_")])


def import_class_path(class_path: str, where: str = "class_path", root: Path | None = None) -> Any:
    """Import ``module.path:Name`` (or ``module.path.Name``, or nested
    ``module:Outer.Inner``); errors are :class:`StackError` naming ``where``.
    A module that is not found gets the closest importable name (next to the
    stack file, ``root``, first)."""
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
            hint = module_suggestion(exc.name, root)
            raise StackError(
                f"{where}: cannot import {class_path!r}: no module named {exc.name!r}.{hint} Modules are looked up next to the "
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
            hint = f" Did you mean {modname}:{match}?" if match and obj is module else did_you_mean(part, public)
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
    """``factory(**comp.init_args)``. An error that ember's own code raised (a
    built-in callback rejecting a value, init_args that do not match the
    signature) becomes a :class:`StackError` naming the stack file and the
    ``init_args`` key it mentions; an error raised in the user's own
    ``__init__`` propagates with its traceback."""
    from ember.errors import raised_by_ember

    try:
        return factory(**comp.init_args)
    except Exception as exc:
        signature_mismatch = isinstance(exc, TypeError) and exc.__traceback__ is not None and exc.__traceback__.tb_next is None
        if not (signature_mismatch or raised_by_ember(exc)):
            raise
        text = str(exc).rstrip(".")
        named = [k for k in comp.init_args if re.search(rf"\b{re.escape(str(k))}\b", text)]
        key = f"{comp.key}.init_args" + (f".{named[0]}" if named else "")
        raise StackError(f"{where_is(stack, key)}: {what} rejected it: {text}.") from exc


def plugin_objects(stack: Stack) -> list[Any]:
    """The plugin objects the declared keys the stack sets build (``build(value)``),
    for ``Trainer(plugins=[...])``. A ``ValueError``/``TypeError`` from a
    plugin's ``build`` is a :class:`StackError` naming the key."""
    out = []
    for name, value in stack.plugin_keys.items():
        key = stack._stack_keys.get(name) if stack._stack_keys is not None else None
        if key is None or key.build is None:
            continue
        try:
            out.append(key.build(copy.deepcopy(value)))
        except (TypeError, ValueError) as exc:
            raise StackError(f"{where_is(stack, name)}: plugin {key.plugin!r} rejected it: {str(exc).rstrip('.')}.") from exc
    return out


#: the class each section's class_path must name: module and class
KINDS: dict[str, tuple[str, str]] = {
    "model": ("ember.module", "Module"),
    "data": ("ember.datamodule", "DataModule"),
    "callbacks": ("ember.callback", "Callback"),
    "loggers": ("ember.callback", "Logger"),
}


def check_kind(obj: Any, section: str, where: str) -> Any:
    """Raise :class:`StackError` unless ``obj`` (what a ``class_path`` named) is
    a class of the kind ``section`` needs (a ``Module`` for ``model``, ...):
    checked before anything is called, so a class_path can never run an
    arbitrary function such as ``os:system``."""
    modname, clsname = KINDS[section]
    base = getattr(importlib.import_module(modname), clsname)
    if isinstance(obj, type) and issubclass(obj, base):
        return obj
    if isinstance(obj, type):
        what = f"the class {obj.__module__}.{obj.__qualname__}, which is not a subclass of ember.{clsname}"
    else:
        kind = "function" if callable(obj) else "value"
        what = f"a {kind} ({getattr(obj, '__module__', None) or type(obj).__module__}.{getattr(obj, '__qualname__', type(obj).__qualname__)}), not a class"
    raise StackError(f"{where}: names {what}; ember did not call it. Name a subclass of ember.{clsname} (module.path:ClassName).")


def build(stack: Stack, registry: Any = None, environ: Mapping[str, str] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Import and create the stack's module, data module, callbacks and
    loggers. Returns ``(module, datamodule or None, trainer_kwargs)`` where
    ``trainer_kwargs`` is ready for ``ember.Trainer(**trainer_kwargs)``."""
    ensure_on_path(stack.import_root)
    module = datamodule = None
    if stack.model is not None:
        where = f"{where_is(stack, 'model.class_path')} = {stack.model.class_path!r}"
        cls = check_kind(import_class_path(stack.model.class_path or "", where, stack.import_root), "model", where)
        module = instantiate(stack, stack.model, cls, stack.model.class_path or "")
    if stack.data is not None:
        where = f"{where_is(stack, 'data.class_path')} = {stack.data.class_path!r}"
        cls = check_kind(import_class_path(stack.data.class_path or "", where, stack.import_root), "data", where)
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
                where = f"{where_is(stack, comp.key + '.class_path')} = {comp.class_path!r}"
                cls = check_kind(import_class_path(comp.class_path or "", where, stack.import_root), section, where)
                made[section].append(instantiate(stack, comp, cls, comp.class_path or ""))
    if made["callbacks"]:
        kwargs["callbacks"] = made["callbacks"]
    if made["loggers"]:
        kwargs["logger"] = made["loggers"]
    if stack.plugins.autoload is not None:
        kwargs["autoload_plugins"] = stack.plugins.autoload
    if stack.plugins.enable:
        kwargs["plugins"] = list(stack.plugins.enable)
    handed = plugin_objects(stack)
    if handed:
        kwargs["plugins"] = [*kwargs.get("plugins", []), *handed]
    if stack.plugins.disable:
        kwargs["disable_plugins"] = list(stack.plugins.disable)
    return module, datamodule, kwargs
