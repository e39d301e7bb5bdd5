"""What the ``ember`` command knows about its own flags and stack keys, without
importing torch: the overridable keys (read from ``ember.Trainer``'s signature
in the source, and from the stack schema) for ``ember fit --help``, and the
closest flag or key for an unknown flag."""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
from functools import lru_cache

from ember.stack.keys import CLASS_KEYS, PLUGIN_KEYS, RESERVED_TRAINER_ARGS, ROLE_KEYS

#: (key, what goes there) for every stack key that is not a Trainer argument
SCHEMA_KEYS: tuple[tuple[str, str], ...] = (
    ("seed_everything", "int: seed every random number generator before building the stack"),
    ("required_plugins", 'array of requirements, e.g. ["ember-foo>=1.2"]'),
    *(
        (
            f"model.{k}",
            "module.path:ClassName (an ember.Module)" if k == "class_path" else "table; one key per argument: --model.init_args.NAME VALUE",
        )
        for k in CLASS_KEYS
    ),
    *(
        (f"data.{k}", "module.path:ClassName (an ember.DataModule)" if k == "class_path" else "table; --data.init_args.NAME VALUE")
        for k in CLASS_KEYS
    ),
    *(
        (
            f"callbacks.N.{k}",
            "registered callback name (`ember plugins`)"
            if k == "name"
            else ("module.path:ClassName (an ember.Callback)" if k == "class_path" else "--callbacks.N.init_args.NAME VALUE"),
        )
        for k in ROLE_KEYS
    ),
    *(
        (
            f"loggers.N.{k}",
            "registered logger name (`ember plugins`)"
            if k == "name"
            else ("module.path:ClassName (an ember.Logger)" if k == "class_path" else "--loggers.N.init_args.NAME VALUE"),
        )
        for k in ROLE_KEYS
    ),
    *(
        (f"plugins.{k}", "true or false" if k == "autoload" else "array of plugin names (entry point, distribution, or dist:entry)")
        for k in PLUGIN_KEYS
    ),
)


@lru_cache(maxsize=1)
def trainer_arguments() -> tuple[tuple[str, str], ...]:
    """``(name, "annotation = default")`` for each keyword of
    ``ember.Trainer.__init__`` that a stack sets under ``[trainer]``, read from
    the source file (importing ``ember.trainer`` would import torch)."""
    spec = importlib.util.find_spec("ember.trainer")
    if spec is None or not spec.origin:
        return ()
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError):
        return ()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return tuple(_describe_args(item.args))
    return ()


def _describe_args(args: ast.arguments) -> list[tuple[str, str]]:
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults, strict=True)) + list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    out = []
    for arg, default in pairs:
        if arg.arg == "self" or arg.arg in RESERVED_TRAINER_ARGS:
            continue
        text = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        if default is not None:
            text += (" = " if text else "= ") + ast.unparse(default)
        out.append((arg.arg, text))
    return out


def override_keys() -> list[tuple[str, str]]:
    """Every key a command line (``--KEY VALUE``) can override, with its description."""
    return [*SCHEMA_KEYS, *((f"trainer.{name}", text) for name, text in trainer_arguments())]


def keys_epilog() -> str:
    """The list of overridable keys shown by ``ember fit --help``."""
    keys = override_keys()
    width = min(max(len(k) for k, _ in keys) + 2, 36)
    lines = ["overridable stack keys (--KEY VALUE, --KEY=VALUE, or EMBER_SECTION__KEY=VALUE; N is a list index):"]
    lines += [f"  --{key:<{width}} {text}" for key, text in keys]
    lines.append("")
    lines.append(
        "Values are TOML literals (3, 0.1, true, [1, 2]) or plain strings. Precedence: defaults < stack file < environment < command line."
    )
    lines.append(
        "On an error ember prints one message; add --traceback (ember --traceback fit ...) or EMBER_TRACEBACK=1 for the traceback."
    )
    return "\n".join(lines)


def _score(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def closest_flag(token: str, parser: argparse.ArgumentParser, with_keys: bool) -> str | None:
    """The option of ``parser``, or (``with_keys``) the ``--stack.key``, closest
    to the unknown ``token`` (``--ckpt_pth`` -> ``--ckpt_path``, ``--max_epochs``
    -> ``--trainer.max_epochs``)."""
    name = token.lstrip("-").split("=", 1)[0]
    if not name:
        return None
    options = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    best, best_score = None, 0.0
    for option in options:
        score = _score(name, option[2:])
        if score > best_score:
            best, best_score = option, score
    if with_keys:
        for key, _ in override_keys():
            if key.endswith(".NAME"):
                continue
            last = key.rsplit(".", 1)[-1]
            score = max(_score(name, key), _score(name, last) - 0.01)  # an exact last segment still loses to an exact option
            if score > best_score:
                best, best_score = f"--{key}", score
    return best if best_score >= 0.6 else None
