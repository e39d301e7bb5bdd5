"""Stacks: a project's model, data, trainer settings, callbacks, loggers and
plugins, written down in ``ember.toml`` or the ``[tool.ember]`` table of its
``pyproject.toml``.

Where the stack comes from
    ``--config PATH`` when given (a ``pyproject.toml`` is read from its
    ``[tool.ember]`` table, any other file from its top level); otherwise the
    current directory and then its parents, up to the first directory holding
    ``.git``, the user's home directory, or the filesystem root, and never into
    a directory owned by another user (as git's ``safe.directory``): in each, ``ember.toml`` first, then a
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

This package imports no torch at import time; checking trainer arguments does
(it reads :class:`ember.Trainer`'s signature).

Layout: ``keys`` (sections, dotted keys, TOML literals, formatting), ``files``
(finding and reading the stack file), ``overrides`` (environment and command
line), ``merge`` (merging with provenance), ``spec`` (the :class:`Stack`),
``typecheck`` (values against type hints), ``validate`` (the checks),
``build`` (importing class paths and instantiating), ``load`` (all of it),
``plugin_keys`` (the top-level keys plugins declare through ``add_commands``).
"""

# Everything below is importable from ember.stack (ember.cli and the tests use
# more than __all__ lists, which keeps its historical contents).
from ember.stack.build import build, default_registry, import_class_path  # noqa: F401
from ember.stack.files import find_stack_file
from ember.stack.keys import (  # noqa: F401
    COMMAND_LINE,
    DEFAULT,
    ENV_PREFIX,
    LIST_SECTIONS,
    RESERVED_TRAINER_ARGS,
    TOP_KEYS,
    StackError,
    format_key,
    format_value,
    parse_key,
    parse_literal,
)
from ember.stack.load import load_stack
from ember.stack.overrides import Override, env_overrides, parse_overrides  # noqa: F401
from ember.stack.plugin_keys import StackKey, StackKeys
from ember.stack.spec import Component, PluginsSpec, Stack, trainer_defaults
from ember.stack.validate import check_stack  # noqa: F401

__all__ = [
    "Component",
    "PluginsSpec",
    "Stack",
    "StackError",
    "StackKey",
    "StackKeys",
    "build",
    "find_stack_file",
    "import_class_path",
    "load_stack",
    "parse_literal",
    "parse_overrides",
    "trainer_defaults",
]
