"""The stack as plain nested data, merged from the file and the overrides,
with the origin of every leaf (for :attr:`Stack.provenance` and for errors)."""

from __future__ import annotations

import copy
from typing import Any

from ember.stack.keys import DEFAULT, LIST_SECTIONS, TOP_KEYS, StackError, format_key, show, type_name
from ember.stack.overrides import Override
from ember.suggest import did_you_mean


class Raw:
    """The stack as plain nested data, with the origin of every leaf."""

    def __init__(self, source_label: str | None, pyproject: bool) -> None:
        self.data: dict[str, Any] = {}
        self.prov: dict[tuple[str | int, ...], str] = {}
        self.where: dict[tuple[str | int, ...], str] = {}  # origin as errors describe it
        self.source_label = source_label
        self.pyproject = pyproject
        #: top-level keys that plugins declared (``add_commands(stack_keys)``), accepted beside ember's own
        self.extra_keys: tuple[str, ...] = ()

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
        if isinstance(path[0], int) or (path[0] not in TOP_KEYS and path[0] not in self.extra_keys):
            known = (*TOP_KEYS, *self.extra_keys)
            raise StackError(
                f"{where}: unknown section {str(path[0])!r}; expected one of {', '.join(known)}.{did_you_mean(str(path[0]), known)}"
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
                    raise StackError(f"{where}: {format_key(path[:i])} is {type_name(node)}, not an array of tables.")
                if seg == len(node):
                    node.append({})
                elif seg > len(node):
                    raise StackError(
                        f"{where}: there are {len(node)} {path[0]} entries; use an index up to {len(node)} ({len(node)} appends one)."
                    )
                node = node[seg]
                if not isinstance(node, dict):
                    raise StackError(f"{where}: {here} is {type_name(node)}, not a table.")
            else:
                if not isinstance(node, dict):
                    raise StackError(f"{where}: {format_key(path[:i])} is {type_name(node)}, not a table.")
                if seg not in node or node[seg] is None:
                    node[seg] = [] if isinstance(nxt, int) else {}
                node = node[seg]
                if isinstance(nxt, int) and not isinstance(node, list):
                    raise StackError(f"{where}: {here} is {type_name(node)}, not an array of tables.")
                if not isinstance(nxt, int) and not isinstance(node, dict):
                    raise StackError(f"{where}: {here} is {show(node)}, not a table, so it has no key {nxt!r}.")
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
