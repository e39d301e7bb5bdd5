"""Top-level stack keys that plugins declare, as pytest's ``pytest_addoption``
lets plugins add options.

A command plugin (see :mod:`ember.commands.registry`) declares them from its
``add_commands`` hook implementation, which receives a :class:`StackKeys`
as ``stack_keys``::

    @ember.hookimpl
    def add_commands(stack_keys):
        stack_keys.add(
            "alerts",
            check=dict,
            help="where to send run alerts: [alerts] url = ..., level = ...",
            build=lambda value: AlertsPlugin(**value),
        )

The stack loader then accepts ``[alerts]`` (and ``--alerts.url`` /
``EMBER_ALERTS__URL`` overrides), checks its value with ``check``, and keeps
it in :attr:`ember.stack.Stack.plugin_keys`; ``ember fit`` hands it to the
plugin: ``build(value)`` returns the plugin object passed in
``Trainer(plugins=[...])``. A key nobody declared stays a one-line error
with a did-you-mean over ember's keys and the declared ones.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ember.stack.keys import TOP_KEYS, show

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class StackKey:
    """One declared key: its name, what it means (``help``), how its value
    is checked (``check``), how it becomes a plugin object (``build``) and the
    plugin that declared it."""

    name: str
    help: str
    check: Any = None
    build: Callable[[Any], Any] | None = None
    plugin: str = "<unknown>"

    def checked(self, value: Any) -> Any:
        """``value`` as the plugin gets it; raises ``ValueError`` saying what is expected."""
        if self.check is None:
            return value
        if isinstance(self.check, type) or (isinstance(self.check, tuple) and all(isinstance(t, type) for t in self.check)):
            types = self.check if isinstance(self.check, tuple) else (self.check,)
            if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
                return value
            raise ValueError(f"expected {' or '.join(_type_word(t) for t in types)}, got {show(value)}")
        try:
            return self.check(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc).rstrip(".")) from None


def _type_word(t: type) -> str:
    return {dict: "a table", list: "an array", str: "a string", int: "an integer", float: "a float", bool: "true or false"}.get(
        t, t.__name__
    )


class StackKeys:
    """The keys plugins declare through ``add_commands(stack_keys)``."""

    def __init__(self) -> None:
        self._keys: dict[str, StackKey] = {}
        self._plugin = "<unknown>"

    def add(self, name: str, *, help: str, check: Any = None, build: Callable[[Any], Any] | None = None) -> None:
        """Declare the top-level stack key ``name``.

        :param help: one line saying what the key is for (shown in errors and docs).
        :param check: a type (or tuple of types) the value must be, or a function
            ``check(value) -> value`` that raises ``ValueError``/``TypeError``
            with what is expected; ``None`` accepts anything.
        :param build: ``build(value)`` returns the plugin object that ``ember
            fit/validate/test/predict`` pass in ``Trainer(plugins=[...])`` when
            the stack sets the key.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"plugin {self._plugin!r}: stack key {name!r} must be lower-case letters, digits and _ (a TOML bare key).")
        if name in TOP_KEYS:
            raise ValueError(f"plugin {self._plugin!r}: {name!r} is one of ember's own stack keys; choose another name.")
        if name in self._keys:
            raise ValueError(f"plugin {self._plugin!r}: stack key {name!r} is already declared by plugin {self._keys[name].plugin!r}.")
        self._keys[name] = StackKey(name, help, check, build, self._plugin)

    def names(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def get(self, name: str) -> StackKey | None:
        return self._keys.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def __iter__(self) -> Iterator[StackKey]:
        return iter(self._keys.values())

    @contextlib.contextmanager
    def declaring_for(self, plugin: str) -> Iterator[StackKeys]:
        previous, self._plugin = self._plugin, plugin
        try:
            yield self
        finally:
            self._plugin = previous


def collect(pm: Any, keys: StackKeys | None = None, subparsers: argparse._SubParsersAction | None = None) -> tuple[StackKeys, list[str]]:
    """Fire ``add_commands`` on the plugins of ``pm`` that take ``stack_keys``
    (an implementation that also takes ``subparsers`` gets ``subparsers``, or a
    throwaway parser's). Returns the keys and one warning line per plugin whose
    hook raised (that plugin's keys are left out)."""
    keys = keys if keys is not None else StackKeys()
    warnings: list[str] = []
    for impl in pm.hook.add_commands.get_hookimpls():
        if "stack_keys" not in impl.argnames:
            continue
        kwargs: dict[str, Any] = {"stack_keys": keys}
        if "subparsers" in impl.argnames:
            kwargs["subparsers"] = subparsers if subparsers is not None else argparse.ArgumentParser(prog="ember").add_subparsers()
        try:
            with keys.declaring_for(impl.plugin_name):
                impl.function(**kwargs)
        except Exception as exc:  # one broken plugin must not take the stack down
            source = getattr(pm, "sources", {}).get(impl.plugin_name)
            where = f" (distribution {source.distribution} {source.version})" if source is not None and source.kind == "entrypoint" else ""
            warnings.append(f"plugin {impl.plugin_name!r}{where}: add_commands raised {type(exc).__name__}: {exc}")
    return keys, warnings
