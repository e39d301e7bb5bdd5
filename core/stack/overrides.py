"""Overrides from the environment (``EMBER_TRAINER__MAX_EPOCHS=3``) and the
command line (``--trainer.max_epochs 3``, ``--model.init_args.lr=0.1``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ember.stack.keys import COMMAND_LINE, ENV_PREFIX, SCALAR_TOP_KEYS, StackError, parse_key, parse_literal


@dataclass
class Override:
    """One overridden value, at a key path."""

    path: tuple[str | int, ...]
    value: Any
    origin: str  # provenance: "environment (EMBER_X)" or "command line"
    where: str  # for messages: "environment (EMBER_X)" or "command line (--x.y)"


def parse_overrides(args: Iterable[str]) -> list[Override]:
    """``["--trainer.max_epochs", "3", "--model.init_args.lr=0.1"]`` -> overrides."""
    tokens = list(args)
    out: list[Override] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise StackError(
                f"command line: unexpected argument {token!r}; overrides look like --trainer.max_epochs 3 or --model.init_args.lr=0.1."
            )
        body = token[2:]
        if "=" in body:
            key, value = body.split("=", 1)
            i += 1
        else:
            key = body
            if i + 1 >= len(tokens) or (tokens[i + 1].startswith("--") and len(tokens[i + 1]) > 2):
                raise StackError(f"command line (--{key}): needs a value, as in --{key} VALUE or --{key}=VALUE.")
            value = tokens[i + 1]
            i += 2
        try:
            path = parse_key(key)
        except ValueError as exc:
            raise StackError(f"command line (--{key}): {exc}.") from None
        out.append(Override(path, parse_literal(value), COMMAND_LINE, COMMAND_LINE))
    return out


def env_overrides(environ: Mapping[str, str]) -> list[Override]:
    """``EMBER_<SECTION>__<KEY>[__<KEY>...]=value`` and ``EMBER_SEED_EVERYTHING``.
    Variables without ``__`` (``EMBER_PLUGINS``, ``EMBER_DISABLE_PLUGINS`` ...)
    belong to the plugin manager and are left alone."""
    out: list[Override] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        origin = f"environment ({name})"
        if "__" not in rest:
            if rest.lower() in SCALAR_TOP_KEYS:
                out.append(Override((rest.lower(),), parse_literal(environ[name]), origin, origin))
            continue
        parts = rest.split("__")
        if any(not p for p in parts):
            raise StackError(f"{origin}: empty key segment; write EMBER_SECTION__KEY, as in EMBER_TRAINER__MAX_EPOCHS=3.")
        path = tuple(int(p) if p.isdigit() else p.lower() for p in parts)
        out.append(Override(path, parse_literal(environ[name]), origin, origin))
    return out
