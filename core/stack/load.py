"""Loading a stack: find the file, apply the overrides, check the result."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ember.stack.files import file_label, find_stack_file
from ember.stack.keys import DEFAULT, StackError, format_key
from ember.stack.merge import Raw
from ember.stack.overrides import Override, env_overrides, parse_overrides
from ember.stack.plugin_keys import StackKeys
from ember.stack.spec import Stack
from ember.stack.validate import Checker, check_stack


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
    stack_keys: StackKeys | None = None,
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
    :param stack_keys: the top-level keys plugins declared (the ``ember`` command passes
        those of its command plugins, see :func:`ember.commands.registry.plugin_stack_keys`);
        without them only ember's own keys are accepted.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    environ = os.environ if environ is None else environ
    path, table = find_stack_file(config, cwd)
    label = file_label(path, cwd) if path is not None else None
    raw = Raw(label, pyproject=path is not None and path.name == "pyproject.toml")
    raw.extra_keys = stack_keys.names() if stack_keys is not None else ()
    if table is not None:
        raw.load_file(table)
    given = list(overrides)
    cli: list[Override] = given if all(isinstance(o, Override) for o in given) else parse_overrides([str(o) for o in given])  # type: ignore[assignment]
    for ov in [*env_overrides(environ), *cli]:  # the command line wins: applied last
        raw.apply(ov)
    checker = Checker(raw, stack_keys)
    stack = checker.stack()
    stack.source = path
    stack.import_root = path.parent.resolve() if path is not None else cwd.resolve()
    stack.provenance = {format_key(k): v for k, v in raw.prov.items() if k}
    for key in ("seed_everything", "required_plugins", "plugins.autoload", "plugins.enable", "plugins.disable"):
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
