"""Checking a TOML value against a parameter's type annotation.

Annotations are resolved into real type objects with
:func:`typing.get_type_hints` (modules written with ``from __future__ import
annotations`` keep them as strings). A hint that cannot be resolved (a name
imported only under ``TYPE_CHECKING``, say) accepts anything.

:func:`accepts` answers ``True`` (fits), ``False`` (certainly does not fit) or
``None`` (cannot tell: a class of the user's, ``datetime.timedelta`` ...); only
``False`` is an error. TOML values are ``bool``, ``int``, ``float``, ``str``,
``list`` and ``dict``, so:

- ``true`` is not an ``int``, and an ``int`` is a ``float``;
- ``list``, ``Sequence``, ``Iterable`` ... take an array, whose items are checked;
- ``tuple``, ``set`` and ``frozenset`` take an array (anything else: cannot tell);
- ``dict`` and ``Mapping`` take a table;
- ``os.PathLike`` and ``pathlib.Path`` take a string (anything else: cannot tell).
"""

from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import os
import pathlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_ARRAYS: tuple[Any, ...] = (list, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection)
_LOOSE_ARRAYS: tuple[Any, ...] = (tuple, set, frozenset)
_TABLES: tuple[Any, ...] = (dict, abc.Mapping, abc.MutableMapping)
_UNIONS: tuple[Any, ...] = (typing.Union, types.UnionType)


def annotation_text(annotation: Any) -> str:
    """The annotation as written (``int | None``), for messages; ``""`` when there is none."""
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    try:
        return inspect.formatannotation(annotation)
    except Exception:  # pragma: no cover
        return ""


# --------------------------------------------------------------------------- resolving hints


def _hint_sources(fn: Any) -> list[tuple[Callable[..., Any], Mapping[str, Any] | None]]:
    """The functions whose annotations make up ``fn``'s signature, each with the
    class namespace its annotations may also name."""
    if isinstance(fn, functools.partial):
        return _hint_sources(fn.func)
    if isinstance(fn, type):
        return [(fn.__init__, vars(fn)), (fn.__new__, vars(fn))]
    if inspect.isroutine(fn):
        return [(inspect.unwrap(fn), None)]
    return [(type(fn).__call__, None)] if callable(fn) else []  # an object with __call__


def _resolve_each(source: Callable[..., Any], localns: Mapping[str, Any] | None) -> dict[str, Any]:
    """Like :func:`typing.get_type_hints`, one annotation at a time, leaving out
    those that cannot be resolved."""
    globalns = getattr(source, "__globals__", {})
    out: dict[str, Any] = {}
    for name, annotation in getattr(source, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, globalns, dict(localns or {}))  # what get_type_hints does with a string
            except Exception:
                continue
        out[name] = annotation
    return out


def resolve_hints(fn: Any, names: Iterable[str]) -> dict[str, Any]:
    """The resolved type hints of ``fn``'s parameters ``names``; a parameter
    whose hint cannot be resolved is missing (and accepts anything)."""
    wanted = set(names)
    hints: dict[str, Any] = {}
    for source, localns in _hint_sources(fn):
        try:
            found = typing.get_type_hints(source)
        except Exception:  # a name that is not there at run time, a class-level name ...
            found = _resolve_each(source, localns)
        for name, hint in found.items():
            if name in wanted:
                hints.setdefault(name, hint)
    return hints


# --------------------------------------------------------------------------- checking values


def accepts(hint: Any, value: Any) -> bool | None:
    """Whether the TOML ``value`` fits the type ``hint``: ``True``, ``False``,
    or ``None`` when that cannot be told."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in _UNIONS:
        return _any_of([accepts(alt, value) for alt in args])
    if origin is typing.Annotated:
        return accepts(args[0], value)
    if origin is typing.Literal:
        return any(type(value) is type(allowed) and value == allowed for allowed in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    base = origin if origin is not None else hint
    if base in _ARRAYS:
        if not isinstance(value, list):
            return False
        if not args:
            return True
        verdicts = [accepts(args[0], item) for item in value]
        if any(v is False for v in verdicts):
            return False
        return True if all(verdicts) else None
    if base in _LOOSE_ARRAYS:
        return isinstance(value, list) or None
    if base in _TABLES:
        return isinstance(value, dict)
    if base is os.PathLike or (isinstance(base, type) and issubclass(base, pathlib.PurePath)):
        return True if isinstance(value, str) else None
    return None


def _any_of(verdicts: list[bool | None]) -> bool | None:
    if any(verdicts):
        return True
    return None if any(v is None for v in verdicts) else False


def rejects(param: inspect.Parameter, hints: Mapping[str, Any], value: Any) -> str | None:
    """The annotation text of ``param`` (``int | None``) when ``value``
    certainly does not fit it, else ``None``."""
    text = annotation_text(param.annotation)
    if not text or param.name not in hints:
        return None
    return text if accepts(hints[param.name], value) is False else None
