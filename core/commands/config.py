"""``ember config``: the resolved stack and where each value came from."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ember.commands.common import OVERRIDE_HELP, config_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``ember config`` to ``ember``'s subparsers."""
    p = sub.add_parser(
        "config",
        help="show the resolved stack and where each value came from",
        description=f"Show the resolved stack. {OVERRIDE_HELP}",
        allow_abbrev=False,
    )
    config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from ember.stack import format_value, load_stack

    environ = dict(os.environ)
    from ember.commands.registry import plugin_stack_keys

    stack = load_stack(args.config, Path.cwd(), overrides, environ, stack_keys=plugin_stack_keys())
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
