"""Checking the merged stack: its shape (:meth:`Checker.stack`, no imports),
then :func:`check_stack`: ``[trainer]`` against the Trainer's signature,
callback and logger names against the role registry, and every
``init_args`` against its class's signature."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from ember.stack.build import check_kind, default_registry, ensure_on_path, import_class_path
from ember.stack.keys import (
    CLASS_KEYS,
    LIST_SECTIONS,
    PLUGIN_KEYS,
    RESERVED_TRAINER_ARGS,
    ROLE_KEYS,
    TOP_KEYS,
    StackError,
    format_key,
    format_value,
    parse_key,
    show,
)
from ember.stack.merge import Raw
from ember.stack.plugin_keys import StackKeys
from ember.stack.spec import Component, PluginsSpec, Stack, trainer_class, trainer_parameters
from ember.stack.typecheck import rejects, resolve_hints
from ember.suggest import did_you_mean


class Checker:
    """Reads a :class:`Raw` into a :class:`Stack`; every error names where the value came from."""

    def __init__(self, raw: Raw, stack_keys: StackKeys | None = None) -> None:
        self.raw = raw
        #: the top-level keys plugins declared, accepted beside ember's own
        self.stack_keys = stack_keys

    def fail(self, path: tuple[str | int, ...], message: str) -> StackError:
        return StackError(f"{self.raw.describe(path)}: {message}")

    def table(self, path: tuple[str | int, ...], value: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table ({what}), got {show(value)}.")
        for key in value:
            if key not in keys:
                prefix = format_key(path) + "." if path else ""
                raise self.fail(
                    (*path, key),
                    f"unknown key; {format_key(path) or 'the stack'} takes {', '.join(keys)}.{did_you_mean(key, keys, prefix=prefix)}",
                )
        return value

    def string(self, path: tuple[str | int, ...], value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {show(value)}.")
        return value

    def class_path(self, path: tuple[str | int, ...], value: Any) -> str:
        text = self.string(path, value)
        if ":" not in text and "." not in text:
            raise self.fail(path, f"expected 'module.path:ClassName' or 'module.path.ClassName', got {format_value(text)}.")
        return text

    def init_args(self, path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table of keyword arguments, got {show(value)}.")
        return copy.deepcopy(value)

    def str_list(self, path: tuple[str | int, ...], value: Any) -> list[str]:
        if isinstance(value, str) and self.raw.where_of(path) != self.raw.source_label:
            value = [v.strip() for v in value.split(",") if v.strip()]  # EMBER_PLUGINS__ENABLE=a,b
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, f"expected an array of strings (plugin or distribution names), got {show(value)}.")
        return list(value)

    def requirements(self, path: tuple[str | int, ...], value: Any) -> list[str]:
        """``required_plugins``: an array of requirement strings (``"ember-foo>=1.2"``)."""
        from packaging.requirements import InvalidRequirement, Requirement

        example = 'as in required_plugins = ["ember-foo>=1.2", "ember-bar"]'
        if not isinstance(value, list):
            raise self.fail(path, f"expected an array of requirement strings, {example}; got {show(value)}.")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(
                    (*path, i), f"expected a requirement string (a distribution name and an optional version range), got {show(item)}."
                )
            try:
                Requirement(item)
            except InvalidRequirement as exc:
                reason = str(exc).splitlines()[0].rstrip(".")
                raise self.fail(
                    (*path, i),
                    f"{format_value(item)} is not a valid requirement ({reason}); write a distribution name and an optional version range, {example}.",
                ) from None
        return list(value)

    def component(self, path: tuple[str | int, ...], value: Any) -> Component:
        table = self.table(path, value, CLASS_KEYS, "with class_path and init_args")
        if "class_path" not in table:
            raise self.fail(path, "missing class_path ('module.path:ClassName').")
        return Component(
            format_key(path),
            class_path=self.class_path((*path, "class_path"), table["class_path"]),
            init_args=self.init_args((*path, "init_args"), table.get("init_args", {})),
        )

    def role(self, path: tuple[str | int, ...], value: Any, kind: str) -> Component:
        table = self.table(path, value, ROLE_KEYS, "with name or class_path, and init_args")
        has_name, has_cp = "name" in table, "class_path" in table
        if has_name == has_cp:
            problem = "has both name and class_path" if has_name else "needs a name (a registered " + kind + ") or a class_path"
            raise self.fail(path, f"{problem}; give exactly one (`ember plugins` lists the registered {kind}s).")
        comp = Component(format_key(path), init_args=self.init_args((*path, "init_args"), table.get("init_args", {})))
        if has_name:
            comp.name = self.string((*path, "name"), table["name"])
        else:
            comp.class_path = self.class_path((*path, "class_path"), table["class_path"])
        return comp

    def stack(self) -> Stack:
        declared = self.stack_keys.names() if self.stack_keys is not None else ()
        data = self.table((), self.raw.data, (*TOP_KEYS, *declared), "the stack")
        stack = Stack()
        stack._stack_keys = self.stack_keys
        for name in declared:
            if name in data:
                stack.plugin_keys[name] = self.plugin_key(name, data[name])
        if data.get("seed_everything") is not None:
            seed = data["seed_everything"]
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise self.fail(("seed_everything",), f"expected an integer seed, got {show(seed)}.")
            stack.seed_everything = seed
        if "required_plugins" in data:
            stack.required_plugins = self.requirements(("required_plugins",), data["required_plugins"])
        for section in ("model", "data"):
            if section in data:
                setattr(stack, section, self.component((section,), data[section]))
        if "trainer" in data:
            trainer = data["trainer"]
            if not isinstance(trainer, dict):
                raise self.fail(("trainer",), f"expected a table of ember.Trainer arguments, got {show(trainer)}.")
            for key in trainer:
                if key in RESERVED_TRAINER_ARGS:
                    raise self.fail(("trainer", key), f"set this with {RESERVED_TRAINER_ARGS[key]}, not in [trainer].")
            stack.trainer = copy.deepcopy(trainer)
        if "plugins" in data:
            plugins = self.table(("plugins",), data["plugins"], PLUGIN_KEYS, "with autoload, enable, disable")
            spec = PluginsSpec()
            if "autoload" in plugins:
                if not isinstance(plugins["autoload"], bool):
                    raise self.fail(("plugins", "autoload"), f"expected true or false, got {show(plugins['autoload'])}.")
                spec.autoload = plugins["autoload"]
            for key in ("enable", "disable"):
                if key in plugins:
                    setattr(spec, key, self.str_list(("plugins", key), plugins[key]))
            stack.plugins = spec
        for section, kind in LIST_SECTIONS.items():
            if section not in data:
                continue
            entries = data[section]
            if isinstance(entries, dict):  # [callbacks] written instead of [[callbacks]]
                raise self.fail(
                    (section,), f"expected an array of tables ([[{section}]], one per {kind}), got a single table; write [[{section}]]."
                )
            if not isinstance(entries, list):
                raise self.fail((section,), f"expected an array of tables ([[{section}]]), got {show(entries)}.")
            setattr(stack, section, [self.role((section, i), e, kind) for i, e in enumerate(entries)])
        if stack.loggers and stack.trainer.get("logger") is False:
            raise self.fail(("trainer", "logger"), "is false, but [[loggers]] are configured; remove one of the two.")
        return stack

    def plugin_key(self, name: str, value: Any) -> Any:
        key = self.stack_keys.get(name) if self.stack_keys is not None else None
        assert key is not None
        try:
            return key.checked(copy.deepcopy(value))
        except ValueError as exc:
            raise self.fail((name,), f"{exc}; {name} is plugin {key.plugin!r}'s key: {key.help.rstrip('.')}.") from None

    # -- checks that need ember.Trainer, the role registry, the user's classes
    def trainer_args(self, stack: Stack, trainer_cls: Any) -> None:
        trainer_cls = trainer_class(trainer_cls)
        params = trainer_parameters(trainer_cls)
        hints = resolve_hints(trainer_cls.__init__, stack.trainer)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        names = [
            n
            for n, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY) and n not in RESERVED_TRAINER_ARGS
        ]
        for key, value in stack.trainer.items():
            if key not in params:
                if takes_any:
                    continue
                raise self.fail(
                    ("trainer", key),
                    f"not an ember.Trainer argument.{did_you_mean(key, names, prefix='trainer.')} The arguments are: {', '.join(sorted(names))}.",
                )
            if key == "logger" and not isinstance(value, bool):
                raise self.fail(("trainer", key), f"expected true or false here (configure loggers with [[loggers]]), got {show(value)}.")
            expected = rejects(params[key], hints, value)
            if expected:
                raise self.fail(("trainer", key), f"expected {expected}, got {show(value)}.")

    def kwargs(self, path: tuple[str | int, ...], fn: Any, kwargs: dict[str, Any], what: str) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        params = sig.parameters
        hints = resolve_hints(fn, [k for k in kwargs if k in params])
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            names_ok = None
        else:
            names_ok = [n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        prefix = format_key(path) + "."
        for key, value in kwargs.items():
            if names_ok is not None and key not in names_ok:
                accepted = ", ".join(names_ok) or "no arguments"
                raise self.fail(
                    (*path, key), f"{what} takes no argument {key!r}.{did_you_mean(key, names_ok, prefix=prefix)} It accepts: {accepted}."
                )
            expected = rejects(params[key], hints, value) if key in params else None
            if expected:
                raise self.fail((*path, key), f"{what} expects {expected} for {key!r}, got {show(value)}.")
        missing = [
            n
            for n, p in params.items()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and n not in kwargs
        ]
        if missing:
            raise self.fail(
                path,
                f"{what} requires {', '.join(repr(m) for m in missing)}; add {'them' if len(missing) > 1 else 'it'} to {format_key(path)}.",
            )


def check_stack(stack: Stack, registry: Any = None, trainer_cls: Any = None, environ: Mapping[str, str] | None = None) -> None:
    """The checks of :func:`load_stack` that import things: ``[trainer]`` against
    ``ember.Trainer``'s signature, callback and logger names against
    ``registry`` (built from the stack's plugins when ``None``), and every
    ``init_args`` against its class's signature."""
    raw: Raw | None = stack._raw
    if raw is None:
        raw = Raw(str(stack.source) if stack.source else "the stack", pyproject=False)
        raw.prov = {parse_key(k): v for k, v in stack.provenance.items()}
        raw.where = dict(raw.prov)
    checker = Checker(raw)
    checker.trainer_args(stack, trainer_cls)
    ensure_on_path(stack.import_root)
    for comp in (stack.model, stack.data):
        if comp is None:
            continue
        path = parse_key(comp.key)
        where = f"{checker.raw.describe((*path, 'class_path'))} = {comp.class_path!r}"
        cls = check_kind(import_class_path(comp.class_path or "", where, stack.import_root), str(path[0]), where)
        checker.kwargs((*path, "init_args"), cls, comp.init_args, comp.class_path or "")
    if not (stack.callbacks or stack.loggers):
        return
    if registry is None and any(c.name is not None for c in [*stack.callbacks, *stack.loggers]):
        registry = default_registry(stack, environ)
    for section, kind in LIST_SECTIONS.items():
        for comp in getattr(stack, section):
            path = parse_key(comp.key)
            if comp.name is not None:
                known = registry.names(kind)
                if comp.name not in known:
                    raise checker.fail(
                        (*path, "name"),
                        f"no {kind} named {comp.name!r} is registered.{did_you_mean(comp.name, known)} Registered {kind}s: "
                        f"{', '.join(known) or 'none'}. A plugin that provides it may be missing or disabled; run `ember plugins`.",
                    )
                factory = registry.entry(kind, comp.name).factory
                checker.kwargs((*path, "init_args"), factory, comp.init_args, f"{kind} {comp.name!r}")
            else:
                where = f"{checker.raw.describe((*path, 'class_path'))} = {comp.class_path!r}"
                cls = check_kind(import_class_path(comp.class_path or "", where, stack.import_root), section, where)
                checker.kwargs((*path, "init_args"), cls, comp.init_args, comp.class_path or "")
