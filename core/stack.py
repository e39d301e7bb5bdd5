"""Stacks: a project's model, data, trainer settings, callbacks, loggers and
plugins, written down in ``ember.toml`` or the ``[tool.ember]`` table of its
``pyproject.toml``.

Where the stack comes from
    ``--config PATH`` when given (a ``pyproject.toml`` is read from its
    ``[tool.ember]`` table, any other file from its top level); otherwise the
    current directory and then its parents, up to the filesystem root or the
    first directory holding ``.git``: in each, ``ember.toml`` first, then a
    ``pyproject.toml`` that has a ``[tool.ember]`` table.

Overrides, lowest to highest precedence
    defaults < the stack file < environment variables < the command line.
    ``EMBER_TRAINER__MAX_EPOCHS=3`` or ``EMBER_SEED_EVERYTHING=1`` (section and
    keys separated by ``__``), and ``--trainer.max_epochs 3`` or
    ``--model.init_args.lr=0.1`` on the command line. Values are read as TOML
    literals (``3``, ``0.1``, ``true``, ``[1, 2]``, ``{a = 1}``) and as plain
    strings when they are not one. ``callbacks.0.init_args.monitor`` (or
    ``callbacks[0]...``) addresses an entry of ``[[callbacks]]``; the index
    one past the end appends one.

Every resolved value remembers where it came from (:attr:`Stack.provenance`),
and every error names the file or variable, the dotted key, what was expected
and the closest valid key.

This module imports no torch at import time; checking trainer arguments does
(it reads :class:`ember.Trainer`'s signature).
"""

from __future__ import annotations

import ast
import copy
import datetime as _dt
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ember.roles import closest

__all__ = [
    "Component",
    "PluginsSpec",
    "Stack",
    "StackError",
    "build",
    "find_stack_file",
    "import_class_path",
    "load_stack",
    "parse_literal",
    "parse_overrides",
    "trainer_defaults",
]

DEFAULT = "default"
COMMAND_LINE = "command line"
ENV_PREFIX = "EMBER_"

TOP_KEYS: tuple[str, ...] = ("seed_everything", "model", "data", "trainer", "plugins", "callbacks", "loggers")
SCALAR_TOP_KEYS: tuple[str, ...] = ("seed_everything",)
CLASS_KEYS: tuple[str, ...] = ("class_path", "init_args")
ROLE_KEYS: tuple[str, ...] = ("name", "class_path", "init_args")
PLUGIN_KEYS: tuple[str, ...] = ("autoload", "enable", "disable")
LIST_SECTIONS: dict[str, str] = {"callbacks": "callback", "loggers": "logger"}

#: Trainer arguments that a stack sets through a section of its own.
RESERVED_TRAINER_ARGS: dict[str, str] = {
    "callbacks": "[[callbacks]] tables",
    "plugins": "plugins.enable",
    "disable_plugins": "plugins.disable",
    "autoload_plugins": "plugins.autoload",
}


class StackError(Exception):
    """The stack file, an override or something it names is wrong. The message
    says where (file or variable, dotted key), what was expected, and the
    closest valid key."""


# --------------------------------------------------------------------------- keys and literals


def format_key(path: Iterable[str | int]) -> str:
    """``("callbacks", 0, "init_args", "monitor")`` -> ``callbacks[0].init_args.monitor``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def parse_key(text: str) -> tuple[str | int, ...]:
    """``callbacks[0].init_args.monitor`` or ``callbacks.0.init_args.monitor`` -> a key path."""
    normalized = text.replace("[", ".").replace("]", "")
    parts: list[str | int] = []
    for raw in normalized.split("."):
        if raw == "":
            raise ValueError(f"empty segment in key {text!r}")
        parts.append(int(raw) if raw.isdigit() else raw)
    return tuple(parts)


def parse_literal(text: str) -> Any:
    """A TOML literal (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``, ``{a = 1}``)
    or, when ``text`` is not one, the string itself."""
    try:
        value = tomllib.loads(f"v = {text}")
    except Exception:
        return text
    if set(value) != {"v"} or isinstance(value["v"], (_dt.date, _dt.time, _dt.datetime)):
        return text
    return value["v"]


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _show(value: Any) -> str:
    return f"{_type_name(value)} ({format_value(value)})"


def format_value(value: Any) -> str:
    """``value`` written as a TOML literal (``None`` as ``None``)."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _hint(key_prefix: str, name: str, candidates: Iterable[str]) -> str:
    match = closest(name, list(candidates))
    if match is None:
        return ""
    return f" Did you mean {key_prefix + match!r}?"


# --------------------------------------------------------------------------- annotations, pragmatically


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _strip_typing(text: str) -> str:
    for prefix in ("typing.", "typing_extensions.", "collections.abc.", "builtins."):
        text = text.replace(prefix, "")
    return text.strip()


def _alternatives(annotation: str) -> list[str]:
    text = _strip_typing(annotation)
    if text.startswith("Optional[") and text.endswith("]"):
        return [*_alternatives(text[len("Optional[") : -1]), "None"]
    if text.startswith("Union[") and text.endswith("]"):
        return [alt for part in _split_top(text[len("Union[") : -1], ",") for alt in _alternatives(part)]
    parts = _split_top(text, "|")
    if len(parts) > 1:
        return [alt for part in parts for alt in _alternatives(part)]
    return [text]


def _accepts_one(alt: str, value: Any) -> bool | None:
    """Whether ``value`` fits annotation ``alt``; ``None`` when we cannot tell."""
    head, _, rest = alt.partition("[")
    inner = rest[:-1] if rest.endswith("]") else ""
    if alt in ("None", "NoneType"):
        return value is None
    if alt == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if alt == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if alt == "bool":
        return isinstance(value, bool)
    if alt == "str":
        return isinstance(value, str)
    if alt in ("Any", "object", ""):
        return True
    if head in ("list", "List", "Sequence", "MutableSequence", "Iterable", "Collection"):
        if not isinstance(value, list):
            return False
        if not inner:
            return True
        results = [_accepts(inner, v) for v in value]
        if any(r is False for r in results):
            return False
        return True if all(results) else None
    if head in ("tuple", "Tuple", "set", "Set", "frozenset"):
        return isinstance(value, list) or None
    if head in ("dict", "Dict", "Mapping", "MutableMapping"):
        return isinstance(value, dict)
    if head == "Literal" and inner:
        try:
            allowed = ast.literal_eval("[" + inner + "]")
        except Exception:
            return None
        return any(type(value) is type(a) and value == a for a in allowed)
    if alt in ("Path", "PathLike", "os.PathLike", "pathlib.Path", "PurePath") or head == "PathLike":
        return True if isinstance(value, str) else None
    return None


def _accepts(annotation: str, value: Any) -> bool | None:
    unknown = False
    for alt in _alternatives(annotation):
        verdict = _accepts_one(alt, value)
        if verdict:
            return True
        if verdict is None:
            unknown = True
    return None if unknown else False


def _annotation_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    try:
        return inspect.formatannotation(annotation)
    except Exception:  # pragma: no cover
        return ""


# --------------------------------------------------------------------------- the stack


@dataclass
class Component:
    """A class the stack instantiates: the model, the data module, a callback
    or a logger (these last two by registered ``name`` or by ``class_path``)."""

    key: str  # "model", "data", "callbacks[0]", ...
    class_path: str | None = None
    name: str | None = None
    init_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.class_path is not None:
            out["class_path"] = self.class_path
        out["init_args"] = copy.deepcopy(self.init_args)
        return out


@dataclass
class PluginsSpec:
    autoload: bool | None = None  # None: not set (ember's default, true)
    enable: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"autoload": True if self.autoload is None else self.autoload, "enable": list(self.enable), "disable": list(self.disable)}


@dataclass
class Stack:
    model: Component | None = None
    data: Component | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Component] = field(default_factory=list)
    loggers: list[Component] = field(default_factory=list)
    plugins: PluginsSpec = field(default_factory=PluginsSpec)
    seed_everything: int | None = None
    source: Path | None = None
    #: dotted key -> "default", the stack file, "environment (EMBER_...)" or "command line"
    provenance: dict[str, str] = field(default_factory=dict)
    #: where class paths are imported from (the stack file's directory, else the cwd)
    import_root: Path | None = None
    #: the merged raw data with the origin of every leaf, for error messages
    _raw: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.seed_everything is not None:
            out["seed_everything"] = self.seed_everything
        if self.model is not None:
            out["model"] = self.model.to_dict()
        if self.data is not None:
            out["data"] = self.data.to_dict()
        out["trainer"] = copy.deepcopy(self.trainer)
        out["plugins"] = self.plugins.to_dict()
        out["callbacks"] = [c.to_dict() for c in self.callbacks]
        out["loggers"] = [c.to_dict() for c in self.loggers]
        return out

    def origin(self, key: str) -> str:
        """Where the value at dotted ``key`` came from (``default`` if unset)."""
        if key in self.provenance:
            return self.provenance[key]
        for k, v in self.provenance.items():
            if k.startswith(key + ".") or k.startswith(key + "["):
                return v
        return DEFAULT

    def autoload_settings(self, environ: Mapping[str, str] | None = None) -> Any:
        """The plugin manager's :class:`~ember.plugin_manager.AutoloadSettings`
        for this stack: the environment's, plus the ``[plugins]`` section."""
        from ember.plugin_manager import AutoloadSettings

        base = AutoloadSettings.from_env(dict(os.environ if environ is None else environ))
        return base.merged(enable=self.plugins.enable, disable=self.plugins.disable, autoload=self.plugins.autoload)

    def resolved(self, trainer_cls: Any = None) -> list[tuple[str, Any, str]]:
        """Every value of the stack as ``(dotted key, value, origin)``, the
        Trainer's defaults included (when ``ember.Trainer`` can be imported)."""
        rows: list[tuple[str, Any, str]] = []

        def add(key: str, value: Any) -> None:
            rows.append((key, value, self.origin(key)))

        add("seed_everything", self.seed_everything)
        for comp in (self.model, self.data):
            if comp is None:
                continue
            add(f"{comp.key}.class_path", comp.class_path)
            _leaves(f"{comp.key}.init_args", comp.init_args, add)
        defaults = trainer_defaults(trainer_cls)
        for key in sorted(set(defaults) | set(self.trainer)):
            if key in self.trainer:
                add(f"trainer.{key}", self.trainer[key])
            else:
                rows.append((f"trainer.{key}", defaults[key], DEFAULT))
        add("plugins.autoload", True if self.plugins.autoload is None else self.plugins.autoload)
        add("plugins.enable", list(self.plugins.enable))
        add("plugins.disable", list(self.plugins.disable))
        for comp in [*self.callbacks, *self.loggers]:
            if comp.name is not None:
                add(f"{comp.key}.name", comp.name)
            else:
                add(f"{comp.key}.class_path", comp.class_path)
            _leaves(f"{comp.key}.init_args", comp.init_args, add)
        return rows


def _leaves(prefix: str, value: Any, add: Callable[[str, Any], None]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _leaves(f"{prefix}.{k}", v, add)
    else:
        add(prefix, value)


def trainer_defaults(trainer_cls: Any = None) -> dict[str, Any]:
    """The Trainer's keyword arguments and their defaults (those a stack's
    ``[trainer]`` may set); empty when the Trainer cannot be imported."""
    try:
        params = _trainer_parameters(trainer_cls)
    except Exception:
        return {}
    return {
        name: (None if p.default is inspect.Parameter.empty else p.default)
        for name, p in params.items()
        if name not in RESERVED_TRAINER_ARGS
        and name != "logger"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def _trainer_parameters(trainer_cls: Any = None) -> dict[str, inspect.Parameter]:
    if trainer_cls is None:
        from ember.trainer import Trainer as trainer_cls  # imports torch
    params = dict(inspect.signature(trainer_cls.__init__).parameters)
    params.pop("self", None)
    return params


# --------------------------------------------------------------------------- finding and reading files


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(f"{label}: not valid TOML: {exc}.") from None
    except OSError as exc:
        raise StackError(f"{label}: cannot read the stack file: {exc.strerror or exc}.") from None


def _label(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)


def find_stack_file(config: str | os.PathLike[str] | None, cwd: str | os.PathLike[str]) -> tuple[Path | None, dict[str, Any] | None]:
    """The stack file and its table (``[tool.ember]`` for a ``pyproject.toml``),
    or ``(None, None)`` when there is none."""
    cwd = Path(cwd)
    if config is not None:
        path = Path(config).expanduser()
        if not path.is_absolute():
            path = cwd / path
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise StackError(f"--config {config}: the stack file {path} {what}.")
        data = _read_toml(path, _label(path, cwd))
        if path.name == "pyproject.toml":
            tool = data.get("tool", {})
            if not isinstance(tool, dict) or "ember" not in tool:
                raise StackError(
                    f"{_label(path, cwd)}: has no [tool.ember] table. Add one, or put the stack in an ember.toml "
                    "(same keys, without the tool.ember prefix)."
                )
            return path, _table_or_error(tool["ember"], path, cwd)
        return path, data
    for directory in (cwd, *cwd.parents):
        candidate = directory / "ember.toml"
        if candidate.is_file():
            return candidate, _read_toml(candidate, _label(candidate, cwd))
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            data = _read_toml(candidate, _label(candidate, cwd))
            tool = data.get("tool")
            if isinstance(tool, dict) and "ember" in tool:
                return candidate, _table_or_error(tool["ember"], candidate, cwd)
        if (directory / ".git").exists():
            break
    return None, None


def _table_or_error(value: Any, path: Path, cwd: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StackError(f"{_label(path, cwd)}: tool.ember: expected a table ([tool.ember]), got {_show(value)}.")
    return value


# --------------------------------------------------------------------------- overrides


@dataclass
class Override:
    path: tuple[str | int, ...]
    value: Any
    origin: str  # provenance: "environment (EMBER_X)" or "command line"
    where: str  # for messages: "environment (EMBER_X)" or "command line (--x.y)"


def parse_overrides(args: Iterable[str]) -> list[Override]:
    """``["--trainer.max_epochs", "3", "--model.init_args.lr=0.1"]`` -> overrides."""
    tokens = list(args)
    out: list[Override] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise StackError(
                f"command line: unexpected argument {token!r}; overrides look like --trainer.max_epochs 3 or --model.init_args.lr=0.1."
            )
        body = token[2:]
        if "=" in body:
            key, value = body.split("=", 1)
            i += 1
        else:
            key = body
            if i + 1 >= len(tokens) or (tokens[i + 1].startswith("--") and len(tokens[i + 1]) > 2):
                raise StackError(f"command line (--{key}): needs a value, as in --{key} VALUE or --{key}=VALUE.")
            value = tokens[i + 1]
            i += 2
        try:
            path = parse_key(key)
        except ValueError as exc:
            raise StackError(f"command line (--{key}): {exc}.") from None
        out.append(Override(path, parse_literal(value), COMMAND_LINE, COMMAND_LINE))
    return out


def env_overrides(environ: Mapping[str, str]) -> list[Override]:
    """``EMBER_<SECTION>__<KEY>[__<KEY>...]=value`` and ``EMBER_SEED_EVERYTHING``.
    Variables without ``__`` (``EMBER_PLUGINS``, ``EMBER_DISABLE_PLUGINS`` ...)
    belong to the plugin manager and are left alone."""
    out: list[Override] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        origin = f"environment ({name})"
        if "__" not in rest:
            if rest.lower() in SCALAR_TOP_KEYS:
                out.append(Override((rest.lower(),), parse_literal(environ[name]), origin, origin))
            continue
        parts = rest.split("__")
        if any(not p for p in parts):
            raise StackError(f"{origin}: empty key segment; write EMBER_SECTION__KEY, as in EMBER_TRAINER__MAX_EPOCHS=3.")
        path = tuple(int(p) if p.isdigit() else p.lower() for p in parts)
        out.append(Override(path, parse_literal(environ[name]), origin, origin))
    return out


# --------------------------------------------------------------------------- merging with provenance


class _Raw:
    """The stack as plain nested data, with the origin of every leaf."""

    def __init__(self, source_label: str | None, pyproject: bool) -> None:
        self.data: dict[str, Any] = {}
        self.prov: dict[tuple[str | int, ...], str] = {}
        self.where: dict[tuple[str | int, ...], str] = {}  # origin as errors describe it
        self.source_label = source_label
        self.pyproject = pyproject

    def record(self, path: tuple[str | int, ...], value: Any, origin: str, where: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                self.record((*path, k), v, origin, where)
        elif len(path) == 1 and path[0] in LIST_SECTIONS and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                self.record((*path, i), v, origin, where)
        else:
            self.prov[path] = origin
            self.where[path] = where

    def load_file(self, table: dict[str, Any]) -> None:
        assert self.source_label is not None
        self.data = copy.deepcopy(table)
        self.record((), self.data, self.source_label, self.source_label)

    def _get(self, path: tuple[str | int, ...]) -> Any:
        node: Any = self.data
        for seg in path:
            if isinstance(seg, int) and isinstance(node, list) and seg < len(node):
                node = node[seg]
            elif isinstance(seg, str) and isinstance(node, dict) and seg in node:
                node = node[seg]
            else:
                return None
        return node

    def where_of(self, path: tuple[str | int, ...]) -> str:
        if path in self.where:
            return self.where[path]
        for k, v in self.where.items():  # a table: any leaf beneath it
            if k[: len(path)] == path:
                return v
        for n in range(len(path) - 1, 0, -1):  # beneath a leaf
            if path[:n] in self.where:
                return self.where[path[:n]]
        return self.source_label or DEFAULT

    def describe(self, path: tuple[str | int, ...]) -> str:
        where = self.where_of(path)
        key = format_key(path)
        if self.pyproject and where == self.source_label:
            key = "tool.ember." + key if key else "tool.ember"
        return f"{where}: {key}" if key else where

    def apply(self, ov: Override) -> None:
        path = ov.path
        where = f"{ov.where}: {format_key(path)}"
        if isinstance(ov.value, dict) and ov.value and isinstance(self._get(path), dict):
            for k, v in ov.value.items():  # a table merges into the table it overrides
                self.apply(Override((*path, k), v, ov.origin, ov.where))
            return
        if isinstance(path[0], int) or path[0] not in TOP_KEYS:
            raise StackError(
                f"{where}: unknown section {str(path[0])!r}; expected one of {', '.join(TOP_KEYS)}.{_hint('', str(path[0]), TOP_KEYS)}"
            )
        for i, seg in enumerate(path):
            if isinstance(seg, int) and not (i == 1 and path[0] in LIST_SECTIONS):
                raise StackError(
                    f"{where}: an index ({seg}) is only valid right after callbacks or loggers, as in callbacks.0.init_args.monitor."
                )
        node: Any = self.data
        for i, seg in enumerate(path[:-1]):
            nxt = path[i + 1]
            here = format_key(path[: i + 1]) or "the stack"
            if isinstance(seg, int):
                if not isinstance(node, list):
                    raise StackError(f"{where}: {format_key(path[:i])} is {_type_name(node)}, not an array of tables.")
                if seg == len(node):
                    node.append({})
                elif seg > len(node):
                    raise StackError(
                        f"{where}: there are {len(node)} {path[0]} entries; use an index up to {len(node)} ({len(node)} appends one)."
                    )
                node = node[seg]
                if not isinstance(node, dict):
                    raise StackError(f"{where}: {here} is {_type_name(node)}, not a table.")
            else:
                if not isinstance(node, dict):
                    raise StackError(f"{where}: {format_key(path[:i])} is {_type_name(node)}, not a table.")
                if seg not in node or node[seg] is None:
                    node[seg] = [] if isinstance(nxt, int) else {}
                node = node[seg]
                if isinstance(nxt, int) and not isinstance(node, list):
                    raise StackError(f"{where}: {here} is {_type_name(node)}, not an array of tables.")
                if not isinstance(nxt, int) and not isinstance(node, dict):
                    raise StackError(f"{where}: {here} is {_show(node)}, not a table, so it has no key {nxt!r}.")
        last = path[-1]
        if isinstance(last, int):
            if last > len(node):
                raise StackError(f"{where}: there are {len(node)} {path[0]} entries; use an index up to {len(node)}.")
            if last == len(node):
                node.append(None)
        for k in [k for k in self.prov if k[: len(path)] == path]:
            del self.prov[k]
            del self.where[k]
        # a value that was a leaf above the new one is now a table: forget it
        for n in range(1, len(path)):
            self.prov.pop(path[:n], None)
            self.where.pop(path[:n], None)
        node[last] = copy.deepcopy(ov.value)
        self.record(path, node[last], ov.origin, ov.where)


# --------------------------------------------------------------------------- validation


class _Checker:
    def __init__(self, raw: _Raw) -> None:
        self.raw = raw

    def fail(self, path: tuple[str | int, ...], message: str) -> StackError:
        return StackError(f"{self.raw.describe(path)}: {message}")

    def table(self, path: tuple[str | int, ...], value: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table ({what}), got {_show(value)}.")
        for key in value:
            if key not in keys:
                prefix = format_key(path) + "." if path else ""
                raise self.fail(
                    (*path, key), f"unknown key; {format_key(path) or 'the stack'} takes {', '.join(keys)}.{_hint(prefix, key, keys)}"
                )
        return value

    def string(self, path: tuple[str | int, ...], value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {_show(value)}.")
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
            raise self.fail(path, f"expected a table of keyword arguments, got {_show(value)}.")
        return copy.deepcopy(value)

    def str_list(self, path: tuple[str | int, ...], value: Any) -> list[str]:
        if isinstance(value, str) and self.raw.where_of(path) != self.raw.source_label:
            value = [v.strip() for v in value.split(",") if v.strip()]  # EMBER_PLUGINS__ENABLE=a,b
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, f"expected an array of strings (plugin or distribution names), got {_show(value)}.")
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
        data = self.table((), self.raw.data, TOP_KEYS, "the stack")
        stack = Stack()
        if data.get("seed_everything") is not None:
            seed = data["seed_everything"]
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise self.fail(("seed_everything",), f"expected an integer seed, got {_show(seed)}.")
            stack.seed_everything = seed
        for section in ("model", "data"):
            if section in data:
                setattr(stack, section, self.component((section,), data[section]))
        if "trainer" in data:
            trainer = data["trainer"]
            if not isinstance(trainer, dict):
                raise self.fail(("trainer",), f"expected a table of ember.Trainer arguments, got {_show(trainer)}.")
            for key in trainer:
                if key in RESERVED_TRAINER_ARGS:
                    raise self.fail(("trainer", key), f"set this with {RESERVED_TRAINER_ARGS[key]}, not in [trainer].")
            stack.trainer = copy.deepcopy(trainer)
        if "plugins" in data:
            plugins = self.table(("plugins",), data["plugins"], PLUGIN_KEYS, "with autoload, enable, disable")
            spec = PluginsSpec()
            if "autoload" in plugins:
                if not isinstance(plugins["autoload"], bool):
                    raise self.fail(("plugins", "autoload"), f"expected true or false, got {_show(plugins['autoload'])}.")
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
                raise self.fail((section,), f"expected an array of tables ([[{section}]]), got {_show(entries)}.")
            setattr(stack, section, [self.role((section, i), e, kind) for i, e in enumerate(entries)])
        if stack.loggers and stack.trainer.get("logger") is False:
            raise self.fail(("trainer", "logger"), "is false, but [[loggers]] are configured; remove one of the two.")
        return stack

    # -- checks that need ember.Trainer, the role registry, the user's classes
    def trainer_args(self, stack: Stack, trainer_cls: Any) -> None:
        params = _trainer_parameters(trainer_cls)
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
                    f"not an ember.Trainer argument.{_hint('trainer.', key, names)} The arguments are: {', '.join(sorted(names))}.",
                )
            annotation = _annotation_text(params[key].annotation)
            if key == "logger" and not isinstance(value, bool):
                raise self.fail(("trainer", key), f"expected true or false here (configure loggers with [[loggers]]), got {_show(value)}.")
            if annotation and _accepts(annotation, value) is False:
                raise self.fail(("trainer", key), f"expected {annotation}, got {_show(value)}.")

    def kwargs(self, path: tuple[str | int, ...], fn: Any, kwargs: dict[str, Any], what: str) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        params = sig.parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            names_ok = None
        else:
            names_ok = [n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        prefix = format_key(path) + "."
        for key, value in kwargs.items():
            if names_ok is not None and key not in names_ok:
                accepted = ", ".join(names_ok) or "no arguments"
                raise self.fail((*path, key), f"{what} takes no argument {key!r}.{_hint(prefix, key, names_ok)} It accepts: {accepted}.")
            if key in params:
                annotation = _annotation_text(params[key].annotation)
                if annotation and _accepts(annotation, value) is False:
                    raise self.fail((*path, key), f"{what} expects {annotation} for {key!r}, got {_show(value)}.")
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


def _ensure_on_path(directory: Path | None) -> None:
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


def load_stack(
    config: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] | Iterable[Override] = (),
    environ: Mapping[str, str] | None = None,
    *,
    check: bool = True,
    require_model: bool = False,
    registry: Any = None,
    trainer_cls: Any = None,
) -> Stack:
    """Find, read, override and validate a stack.

    :param config: an explicit stack file (``--config``), else discovery from ``cwd``.
    :param overrides: command-line overrides (``["--trainer.max_epochs", "3"]``).
    :param environ: the environment to read ``EMBER_*`` overrides from (``os.environ`` by default).
    :param check: also check Trainer arguments against ``ember.Trainer``, callback and
        logger names against the role registry, and ``init_args`` against the classes'
        signatures (which imports them). ``False`` checks the file's shape only.
    :param require_model: fail unless a ``[model]`` is configured.
    :param registry: the :class:`~ember.roles.RoleRegistry` to look names up in; by
        default one is built from the plugins this stack would load.
    :param trainer_cls: the Trainer class whose signature ``[trainer]`` is checked against.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    environ = os.environ if environ is None else environ
    path, table = find_stack_file(config, cwd)
    label = _label(path, cwd) if path is not None else None
    raw = _Raw(label, pyproject=path is not None and path.name == "pyproject.toml")
    if table is not None:
        raw.load_file(table)
    given = list(overrides)
    cli: list[Override] = given if all(isinstance(o, Override) for o in given) else parse_overrides([str(o) for o in given])  # type: ignore[assignment]
    for ov in [*env_overrides(environ), *cli]:  # the command line wins: applied last
        raw.apply(ov)
    checker = _Checker(raw)
    stack = checker.stack()
    stack.source = path
    stack.import_root = path.parent.resolve() if path is not None else cwd.resolve()
    stack.provenance = {format_key(k): v for k, v in raw.prov.items() if k}
    for key in ("seed_everything", "plugins.autoload", "plugins.enable", "plugins.disable"):
        stack.provenance.setdefault(key, DEFAULT)
    stack._raw = raw
    if require_model and stack.model is None:
        where = (
            f"{label}" if label else f"no stack file (looked for ember.toml or a pyproject.toml with [tool.ember] in {cwd} and its parents)"
        )
        raise StackError(
            f"{where}: model: no [model] configured; add a [model] table with class_path (and init_args), or pass --model.class_path module:ClassName."
        )
    if check:
        check_stack(stack, registry=registry, trainer_cls=trainer_cls, environ=environ)
    return stack


def check_stack(stack: Stack, registry: Any = None, trainer_cls: Any = None, environ: Mapping[str, str] | None = None) -> None:
    """The checks of :func:`load_stack` that import things: ``[trainer]`` against
    ``ember.Trainer``'s signature, callback and logger names against
    ``registry`` (built from the stack's plugins when ``None``), and every
    ``init_args`` against its class's signature."""
    raw: _Raw | None = stack._raw
    if raw is None:
        raw = _Raw(str(stack.source) if stack.source else "the stack", pyproject=False)
        raw.prov = {parse_key(k): v for k, v in stack.provenance.items()}
        raw.where = dict(raw.prov)
    checker = _Checker(raw)
    checker.trainer_args(stack, trainer_cls)
    _ensure_on_path(stack.import_root)
    for comp in (stack.model, stack.data):
        if comp is None:
            continue
        path = parse_key(comp.key)
        cls = import_class_path(comp.class_path or "", f"{checker.raw.describe((*path, 'class_path'))} = {comp.class_path!r}")
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
                        f"no {kind} named {comp.name!r} is registered.{_hint('', comp.name, known)} Registered {kind}s: "
                        f"{', '.join(known) or 'none'}. A plugin that provides it may be missing or disabled; run `ember plugins`.",
                    )
                factory = registry.entry(kind, comp.name).factory
                checker.kwargs((*path, "init_args"), factory, comp.init_args, f"{kind} {comp.name!r}")
            else:
                cls = import_class_path(comp.class_path or "", f"{checker.raw.describe((*path, 'class_path'))} = {comp.class_path!r}")
                checker.kwargs((*path, "init_args"), cls, comp.init_args, comp.class_path or "")


def default_registry(stack: Stack, environ: Mapping[str, str] | None = None) -> Any:
    """The role registry of the plugins this stack loads (built-ins and the
    allowed entry points)."""
    from ember.plugin_manager import default_plugin_manager

    return default_plugin_manager(stack.autoload_settings(environ)).build_registry()


# --------------------------------------------------------------------------- building


def _where(stack: Stack, key: str) -> str:
    raw: _Raw | None = stack._raw
    if raw is None:
        return f"{stack.origin(key)}: {key}"
    return raw.describe(parse_key(key))


def _instantiate(stack: Stack, comp: Component, factory: Any, what: str) -> Any:
    try:
        return factory(**comp.init_args)
    except TypeError as exc:
        # most often init_args that do not match the signature
        raise StackError(f"{_where(stack, comp.key + '.init_args')}: creating {what} failed: TypeError: {exc}.") from exc


def build(stack: Stack, registry: Any = None, environ: Mapping[str, str] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Import and create the stack's module, data module, callbacks and
    loggers. Returns ``(module, datamodule or None, trainer_kwargs)`` where
    ``trainer_kwargs`` is ready for ``ember.Trainer(**trainer_kwargs)``."""
    _ensure_on_path(stack.import_root)
    module = datamodule = None
    if stack.model is not None:
        cls = import_class_path(stack.model.class_path or "", f"{_where(stack, 'model.class_path')} = {stack.model.class_path!r}")
        module = _instantiate(stack, stack.model, cls, stack.model.class_path or "")
    if stack.data is not None:
        cls = import_class_path(stack.data.class_path or "", f"{_where(stack, 'data.class_path')} = {stack.data.class_path!r}")
        datamodule = _instantiate(stack, stack.data, cls, stack.data.class_path or "")
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
                    raise StackError(f"{_where(stack, comp.key + '.name')}: {exc}") from None
                made[section].append(_instantiate(stack, comp, factory, f"{kind} {comp.name!r}"))
            else:
                cls = import_class_path(comp.class_path or "", f"{_where(stack, comp.key + '.class_path')} = {comp.class_path!r}")
                made[section].append(_instantiate(stack, comp, cls, comp.class_path or ""))
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
