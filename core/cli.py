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
raised (its traceback is kept). See docs/errors.md and :mod:`ember.cli_errors`.

Layout: this module parses and dispatches; ``cli_run`` runs the stack,
``cli_plugins`` lists plugins, ``cli_help`` knows the flags and stack keys,
``cli_errors`` reports errors.

Nothing heavy is imported at module level: ``ember --help`` and ``ember
--version`` import neither torch nor any plugin, and the commands import
torch only when they need it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ember._version import __version__

RUN_COMMANDS = ("fit", "validate", "test", "predict")
_TOP_KEYS = ("seed_everything", "required_plugins", "model", "data", "trainer", "plugins", "callbacks", "loggers")

_OVERRIDE_HELP = (
    "Any stack value can be overridden with a dotted key: --trainer.max_epochs 3, "
    "--model.init_args.lr=0.1, --seed_everything 7, --callbacks.0.init_args.patience 5. "
    "Values are TOML literals (3, 0.1, true, [1, 2]) or plain strings. Environment "
    "variables work too: EMBER_TRAINER__MAX_EPOCHS=3. Precedence: defaults < stack file "
    "< environment < command line."
)


def _is_override(token: str) -> bool:
    if not token.startswith("--") or token == "--":
        return False
    name = token[2:].split("=", 1)[0]
    return "." in name or "[" in name or name in _TOP_KEYS


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate dotted stack overrides (``--trainer.max_epochs 3``) from the
    options argparse knows."""
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        token = argv[i]
        if token == "--":  # everything after is for argparse
            rest.extend(argv[i:])
            break
        if _is_override(token):
            overrides.append(token)
            if "=" not in token and i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
                overrides.append(argv[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return rest, overrides


def _parser(keys_help: bool = False) -> argparse.ArgumentParser:
    """The parser. With ``keys_help`` (only when --help is asked for), the
    run commands' help lists every overridable stack key."""
    parser = argparse.ArgumentParser(
        prog="ember",
        description="Train PyTorch models from a stack file ([tool.ember] in pyproject.toml, or ember.toml).",
        epilog=_OVERRIDE_HELP,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the Python traceback with error messages (also EMBER_TRACEBACK=1); anywhere before --",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="PATH",
            help="stack file (default: ember.toml, else pyproject.toml with [tool.ember], searched upwards from the current directory)",
        )

    helps = {
        "fit": "train the stack's model",
        "validate": "run the validation loop once",
        "test": "run the test loop",
        "predict": "run prediction (save the outputs with --output)",
    }
    for name in RUN_COMMANDS:
        if keys_help:
            from ember.cli_help import keys_epilog

            p = sub.add_parser(
                name,
                help=helps[name],
                description=f"{helps[name].capitalize()}.",
                epilog=keys_epilog(),
                formatter_class=argparse.RawDescriptionHelpFormatter,
                allow_abbrev=False,
            )
        else:
            p = sub.add_parser(name, help=helps[name], description=f"{helps[name].capitalize()}. {_OVERRIDE_HELP}", allow_abbrev=False)
        config_arg(p)
        p.add_argument("--ckpt_path", metavar="PATH", help="checkpoint to start from ('best' and 'last' name the checkpoint callback's)")
        if name == "predict":
            p.add_argument("--output", metavar="PATH", help="save the list of predictions here with torch.save")
    p = sub.add_parser(
        "config",
        help="show the resolved stack and where each value came from",
        description=f"Show the resolved stack. {_OVERRIDE_HELP}",
        allow_abbrev=False,
    )
    config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("plugins", help="list plugins: hooks, roles, failures", allow_abbrev=False)
    config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    from ember import checkpoint_cli  # standard library only at import time

    checkpoint_cli.add_parser(sub)
    from ember import checkpoint_consolidate  # standard library only at import time

    checkpoint_consolidate.add_parser(sub.choices["checkpoint"])
    from ember import plot  # standard library only at import time; matplotlib only when a plot is drawn

    plot.add_parser(sub)
    from ember import export_cli  # standard library only at import time

    export_cli.add_parser(sub)
    p = sub.add_parser("new", help="generate a new project from a template", allow_abbrev=False)
    new_sub = p.add_subparsers(dest="template", metavar="TEMPLATE", required=True)
    p = new_sub.add_parser(
        "plugin",
        help="a plugin distribution: package, entry point, tests, README",
        description="Generate a pip-installable ember plugin distribution with a callback, its registration, and tests "
        "that use the ember.testing fixtures.",
        allow_abbrev=False,
    )
    p.add_argument("name", metavar="NAME", help="plugin name, e.g. best-loss (the distribution is called ember-best-loss)")
    p.add_argument("--dir", metavar="PATH", help="where to create it (default: ./ember-NAME); must not exist or be empty")
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
    from ember.cli_help import closest_flag

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
    from ember.cli_errors import traceback_requested

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
    from ember.cli_errors import warn_shadowing

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
        from ember.cli_errors import is_user_error, one_line, user_error

        if not is_user_error(exc):
            raise
        return user_error(one_line(exc), exc, show_traceback)


def _dispatch(args: argparse.Namespace, overrides: list[str], show_traceback: bool) -> int:
    if args.command == "plot":
        from ember import plot

        return plot.run(args, overrides)
    if args.command == "export":  # takes stack overrides (--model.class_path ...)
        from ember import export_cli

        return export_cli.run(args, overrides)
    if overrides and args.command in ("plugins", "checkpoint", "new"):
        print(f"error: `ember {args.command}` takes no stack overrides (got {' '.join(overrides)}).", file=sys.stderr)
        return 2
    if args.command == "checkpoint" and getattr(args, "checkpoint_command", None) == "consolidate":
        from ember import checkpoint_consolidate

        return checkpoint_consolidate.run(args)
    if args.command == "checkpoint":
        from ember import checkpoint_cli

        return checkpoint_cli.run(args)
    if args.command == "new":
        return _new(args)
    if args.command in RUN_COMMANDS:
        from ember import cli_run

        return cli_run.run(args, overrides, show_traceback)
    if args.command == "config":
        return _config(args, overrides)
    from ember import cli_plugins

    return cli_plugins.run(args)


# --------------------------------------------------------------------------- config


def _config(args: argparse.Namespace, overrides: list[str]) -> int:
    from ember.stack import format_value, load_stack

    environ = dict(os.environ)
    stack = load_stack(args.config, Path.cwd(), overrides, environ)
    rows = stack.resolved()
    if args.json:
        payload = {
            "source": str(stack.source.resolve()) if stack.source else None,
            "stack": stack.to_dict(),
            "values": [{"key": k, "value": v, "origin": o} for k, v, o in rows],
            "provenance": {k: o for k, _, o in rows},
        }
        print(json.dumps(payload, indent=2, default=repr))
        return 0
    if stack.source is not None:
        print(f"# stack: {stack.source.resolve()}")
        if not args.config:
            print(f"# found from {Path.cwd()} (discovery stops at .git, your home directory and directories owned by other users)")
    else:
        from ember.stack.files import search_dirs

        dirs, why = search_dirs(Path.cwd())
        print(
            f"# no stack file found (ember.toml, or pyproject.toml with [tool.ember]) in {dirs[0]}"
            + (f" or its {len(dirs) - 1} parent(s)" if len(dirs) > 1 else "")
            + f"; {why}. Defaults and overrides only."
        )
    texts = [f"{k} = {format_value(v)}" for k, v, _ in rows]
    width = min(max((len(t) for t in texts), default=0), 60)
    for text, (_, _, origin) in zip(texts, rows, strict=True):
        print(f"{text:<{width}}  # {origin}")
    return 0


# --------------------------------------------------------------------------- plugins


# --------------------------------------------------------------------------- new


def _new(args: argparse.Namespace) -> int:
    from ember import scaffold  # standard library only

    try:
        created = scaffold.new_plugin(args.name, args.dir)
    except scaffold.ScaffoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(scaffold.next_steps(created))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
