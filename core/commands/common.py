"""What several ``ember`` commands share: the run commands' names, stack
overrides on the command line, the ``--config`` option. Standard library only."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

RUN_COMMANDS = ("fit", "validate", "test", "predict")
TOP_KEYS = ("seed_everything", "required_plugins", "model", "data", "trainer", "plugins", "callbacks", "loggers")

OVERRIDE_HELP = (
    "Any stack value can be overridden with a dotted key: --trainer.max_epochs 3, "
    "--model.init_args.lr=0.1, --seed_everything 7, --callbacks.0.init_args.patience 5. "
    "Values are TOML literals (3, 0.1, true, [1, 2]) or plain strings. Environment "
    "variables work too: EMBER_TRAINER__MAX_EPOCHS=3. Precedence: defaults < stack file "
    "< environment < command line."
)


def is_override(token: str) -> bool:
    if not token.startswith("--") or token == "--":
        return False
    name = token[2:].split("=", 1)[0]
    return "." in name or "[" in name or name in TOP_KEYS


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
        if is_override(token):
            overrides.append(token)
            if "=" not in token and i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
                overrides.append(argv[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return rest, overrides


def config_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--config PATH`` (the stack file) to a command's parser."""
    p.add_argument(
        "--config",
        metavar="PATH",
        help="stack file (default: ember.toml, else pyproject.toml with [tool.ember], searched upwards from the current directory)",
    )
