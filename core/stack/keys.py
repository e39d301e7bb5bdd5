"""The vocabulary of a stack: its sections and keys, dotted key paths, TOML
literals, and how values are written in messages."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


DEFAULT = "default"
COMMAND_LINE = "command line"
ENV_PREFIX = "EMBER_"

TOP_KEYS: tuple[str, ...] = ("seed_everything", "required_plugins", "model", "data", "trainer", "plugins", "callbacks", "loggers")
#: top-level keys that are not tables: an environment variable sets them whole
#: (``EMBER_SEED_EVERYTHING=1``, ``EMBER_REQUIRED_PLUGINS='["ember-foo>=1.2"]'``)
SCALAR_TOP_KEYS: tuple[str, ...] = ("seed_everything", "required_plugins")
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

#: A key path: ``("callbacks", 0, "init_args", "monitor")``.
KeyPath = tuple[str | int, ...]


class StackError(Exception):
    """The stack file, an override or something it names is wrong. The message
    says where (file or variable, dotted key), what was expected, and the
    closest valid key."""


# --------------------------------------------------------------------------- dotted keys


def format_key(path: Iterable[str | int]) -> str:
    """``("callbacks", 0, "init_args", "monitor")`` -> ``callbacks[0].init_args.monitor``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def parse_key(text: str) -> KeyPath:
    """``callbacks[0].init_args.monitor`` or ``callbacks.0.init_args.monitor`` -> a key path."""
    normalized = text.replace("[", ".").replace("]", "")
    parts: list[str | int] = []
    for raw in normalized.split("."):
        if raw == "":
            raise ValueError(f"empty segment in key {text!r}")
        parts.append(int(raw) if raw.isdigit() else raw)
    return tuple(parts)


# --------------------------------------------------------------------------- values


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
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def type_name(value: Any) -> str:
    """What kind of TOML value ``value`` is, for messages: ``an integer``, ``a table`` ..."""
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


def show(value: Any) -> str:
    """``a string ("x")``: the kind of ``value`` and the value itself."""
    return f"{type_name(value)} ({format_value(value)})"
