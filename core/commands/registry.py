"""Commands that plugins add to ``ember`` through the ``add_commands`` hook.

``ember`` must start fast, so it does not load the plugins a run loads (they
import torch). It loads a second, small set: the modules named in
:data:`BUILTIN_COMMAND_PLUGINS` and the entry points of the ``ember.commands``
group, which must import nothing heavy at module level (the same environment
variables as for run plugins apply: ``EMBER_DISABLE_PLUGINS``,
``EMBER_PLUGINS``, ``EMBER_DISABLE_PLUGIN_AUTOLOAD``). Each implements::

    @ember.hookimpl
    def add_commands(subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.set_defaults(run=lambda args: print("hello") or 0)

A parser whose defaults hold ``run`` is dispatched to ``run(args)``; its return
value is the exit status. The same hook declares top-level stack keys
(``def add_commands(stack_keys)``, see :mod:`ember.stack.plugin_keys`);
:func:`plugin_stack_keys` collects them for the stack loader. A plugin that fails to load or to add its commands
is reported as one warning line and left out; ``ember`` keeps working.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.stack.plugin_keys import StackKeys

#: the entry-point group of third-party command plugins
COMMANDS_ENTRY_POINT_GROUP = "ember.commands"

#: ember's own plugin modules that add commands (light at import time)
BUILTIN_COMMAND_PLUGINS: tuple[str, ...] = ("ember.plugins.strategies.fsdp_consolidate",)


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The subcommands of ``parser`` (e.g. ``subparsers.choices["checkpoint"]``),
    to add an action under an existing command."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _command_plugins() -> Any:
    from ember.plugin_manager import default_plugin_manager

    return default_plugin_manager(strict=False, builtins=BUILTIN_COMMAND_PLUGINS, group=COMMANDS_ENTRY_POINT_GROUP)


def add_plugin_commands(subparsers: argparse._SubParsersAction) -> None:
    """Let the command plugins add their (sub)commands to ``subparsers``."""
    from ember.stack.plugin_keys import StackKeys

    pm = _command_plugins()
    for failure in pm.failures:
        print(f"warning: {failure.describe()}", file=sys.stderr)
    for impl in pm.hook.add_commands.get_hookimpls():
        if "subparsers" not in impl.argnames:
            continue  # declares stack keys only (see plugin_stack_keys)
        try:
            impl.function(**{name: subparsers if name == "subparsers" else StackKeys() for name in impl.argnames})
        except Exception as exc:  # one broken plugin must not take the command down
            source = pm.sources.get(impl.plugin_name)
            where = f" (distribution {source.distribution} {source.version})" if source and source.kind == "entrypoint" else ""
            print(f"warning: plugin {impl.plugin_name!r}{where}: add_commands raised {type(exc).__name__}: {exc}", file=sys.stderr)


def plugin_stack_keys() -> StackKeys:
    """The top-level stack keys the command plugins declare through
    ``add_commands(stack_keys)``, for :func:`ember.stack.load_stack`'s
    ``stack_keys``. A plugin whose hook raises is reported as one warning line
    and its keys are left out (a stack using them then names the unknown key)."""
    from ember.stack.plugin_keys import collect

    keys, warnings = collect(_command_plugins())
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    return keys
