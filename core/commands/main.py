"""The ``ember`` command.

::

    ember fit | validate | test | predict [--config PATH] [--ckpt_path PATH] [--trainer.max_epochs 3 ...]
    ember config [--config PATH] [--json] [overrides ...]
    ember plugins [--json]
    ember checkpoint inspect PATH [--json]
    ember checkpoint consolidate DIR OUT
    ember plot RUN_DIR [RUN_DIR ...] [--metrics a,b] [--output plot.png]
    ember export CKPT [--format onnx|torch_export] [--output PATH] [--config PATH]
    ember new plugin NAME [--dir PATH]
    ember --version

Exit status: 0 on success, 2 for a user error (usage, stack, path, plugin
name: one message naming the culprit and the fix, no traceback unless
``ember --traceback ...`` or ``EMBER_TRACEBACK=1``), 1 when the user's own code
raised (its traceback is kept). See docs/errors.md and :mod:`ember.commands.errors`.

Layout (:mod:`ember.commands`): this module parses and dispatches; ``run``
runs the stack, ``config``, ``plugins``, ``checkpoint``, ``plot``, ``export``
and ``new`` are the other commands, ``help`` knows the flags and stack keys,
``errors`` reports errors, ``common`` holds what they share and ``registry``
adds the commands of plugins (the ``add_commands`` hook; fsdp's ``checkpoint
consolidate`` comes from there).

Nothing heavy is imported at module level: ``ember --help`` and ``ember
--version`` import neither torch nor any plugin, and the commands import
torch only when they need it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ember._version import __version__
from ember.commands.common import OVERRIDE_HELP, RUN_COMMANDS, config_arg, split_overrides


def _parser(keys_help: bool = False) -> argparse.ArgumentParser:
    """The parser. With ``keys_help`` (only when --help is asked for), the
    run commands' help lists every overridable stack key."""
    parser = argparse.ArgumentParser(
        prog="ember",
        description="Train PyTorch models from a stack file ([tool.ember] in pyproject.toml, or ember.toml).",
        epilog=OVERRIDE_HELP,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the Python traceback with error messages (also EMBER_TRACEBACK=1); anywhere before --",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    helps = {
        "fit": "train the stack's model",
        "validate": "run the validation loop once",
        "test": "run the test loop",
        "predict": "run prediction (save the outputs with --output)",
    }
    for name in RUN_COMMANDS:
        if keys_help:
            from ember.commands.help import keys_epilog

            p = sub.add_parser(
                name,
                help=helps[name],
                description=f"{helps[name].capitalize()}.",
                epilog=keys_epilog(),
                formatter_class=argparse.RawDescriptionHelpFormatter,
                allow_abbrev=False,
            )
        else:
            p = sub.add_parser(name, help=helps[name], description=f"{helps[name].capitalize()}. {OVERRIDE_HELP}", allow_abbrev=False)
        config_arg(p)
        p.add_argument("--ckpt_path", metavar="PATH", help="checkpoint to start from ('best' and 'last' name the checkpoint callback's)")
        if name == "predict":
            p.add_argument("--output", metavar="PATH", help="save the list of predictions here with torch.save")
    from ember.commands import checkpoint, config, export, new, plot, plugins  # standard library only at import time
    from ember.commands.registry import add_plugin_commands

    config.add_parser(sub)
    plugins.add_parser(sub)
    checkpoint.add_parser(sub)
    plot.add_parser(sub)  # matplotlib only when a plot is drawn
    export.add_parser(sub)
    new.add_parser(sub)
    add_plugin_commands(sub)
    return parser


def _subcommand_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)subcommand ``args`` ran: its usage is the one to show."""
    current = parser
    dests = ["command", "checkpoint_command", "template"]
    while current._subparsers is not None:
        action = next(a for a in current._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
        chosen = next((getattr(args, d, None) for d in dests if getattr(args, d, None) in action.choices), None)
        if chosen is None:
            break
        current = action.choices[chosen]
    return current


def _unknown_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]) -> int:
    from ember.commands.help import closest_flag

    sub = _subcommand_parser(parser, args)
    name = sub.prog
    flag = next((u for u in unknown if u.startswith("-")), None)
    if flag is None:
        message = f"{name}: unexpected argument {unknown[0]!r}."
    else:
        match = closest_flag(flag, sub, with_keys=args.command in (*RUN_COMMANDS, "config", "export"))
        value = f" {unknown[unknown.index(flag) + 1]}" if match and "=" not in flag and unknown.index(flag) + 1 < len(unknown) else ""
        hint = f" Did you mean {match}{value}?" if match else ""
        message = f"{name}: unrecognized option {flag.split('=', 1)[0]!r}.{hint} `{name} --help` lists the options" + (
            " and the stack keys." if args.command in RUN_COMMANDS else "."
        )
    print(f"error: {message}", file=sys.stderr)
    print(sub.format_usage().rstrip(), file=sys.stderr)
    return 2


def _short_warnings() -> None:
    """ember's own warnings (plugins that failed, unknown plugin names) as one
    ``warning: ...`` line each, without the source line Python adds."""
    import warnings

    default = warnings.formatwarning

    def formatwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        if category.__module__.startswith("ember."):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    from ember.commands.errors import traceback_requested

    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    flag = "--traceback" in argv[:end]
    if flag:
        argv = [a for i, a in enumerate(argv) if not (a == "--traceback" and i < end)]
    show_traceback = traceback_requested(flag)
    _short_warnings()
    parser = _parser(keys_help=any(a in ("-h", "--help") for a in argv))
    rest, overrides = split_overrides(argv)
    try:
        args, unknown = parser.parse_known_args(rest)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if unknown:
        return _unknown_flags(parser, args, unknown)
    from ember.commands.errors import warn_shadowing

    warn_shadowing(Path.cwd())
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _dispatch(args, overrides, show_traceback)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from ember.commands.errors import is_user_error, one_line, user_error

        if not is_user_error(exc):
            raise
        return user_error(one_line(exc), exc, show_traceback)


def _dispatch(args: argparse.Namespace, overrides: list[str], show_traceback: bool) -> int:
    if args.command == "plot":
        from ember.commands import plot

        return plot.run(args, overrides)
    if args.command == "export":  # takes stack overrides (--model.class_path ...)
        from ember.commands import export

        return export.run(args, overrides)
    if args.command in RUN_COMMANDS:
        from ember.commands import run

        return run.run(args, overrides, show_traceback)
    if args.command == "config":
        from ember.commands import config

        return config.run(args, overrides)
    if overrides:
        print(f"error: `ember {args.command}` takes no stack overrides (got {' '.join(overrides)}).", file=sys.stderr)
        return 2
    if getattr(args, "run", None) is not None:  # a command a plugin added (add_commands hook)
        return int(args.run(args) or 0)
    from ember.commands import checkpoint, new, plugins

    return {"checkpoint": checkpoint.run, "new": new.run, "plugins": plugins.run}[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
