#!/usr/bin/env python
"""Generate ``docs/reference/hooks.md`` from :mod:`ember.hookspecs`.

Every function in ``ember.hookspecs`` that carries pluggy's ``ember_spec``
marker is a hook. The page lists them in source order, split into the hooks
that fire once per run, epoch or event and the per-step hooks named in
``ember.hookspecs.PER_STEP_HOOKS``; each entry shows the signature, the
docstring and the documented parameters.

Usage::

    python docs/gen_hook_reference.py           # rewrite docs/reference/hooks.md
    python docs/gen_hook_reference.py --check   # exit 1 if the file is stale
    python docs/gen_hook_reference.py --stdout  # print instead of writing

The output depends only on ``ember.hookspecs``, so it is the same on every
machine and Python version; ``tests/docs/test_docs.py`` checks that the
committed page is up to date.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "reference" / "hooks.md"

_PARAM = re.compile(r"^:param\s+(\w+):\s*(.*)$")
_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj|exc):`~?([^`]+)`")
_TILDE_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj|exc):`~([^`]+)`")


def hook_functions(hookspecs: Any) -> list[Callable[..., Any]]:
    """The hook specifications of ``hookspecs``, in source order."""
    found = [obj for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "ember_spec") and not name.startswith("_")]
    return sorted(found, key=lambda fn: fn.__code__.co_firstlineno)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into its prose and its ``:param name:`` entries."""
    lines = inspect.cleandoc(doc or "").splitlines()
    body: list[str] = []
    params: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        match = _PARAM.match(line)
        if match:
            current = match.group(1)
            params[current] = [match.group(2).strip()]
            continue
        if current is not None and line.strip() and line[:1].isspace():
            params[current].append(line.strip())
            continue
        current = None
        body.append(line)
    return "\n".join(body).strip(), {name: " ".join(text).strip() for name, text in params.items()}


def rst_to_markdown(text: str) -> str:
    """The little reStructuredText the hookspecs use, as Markdown."""
    text = _TILDE_ROLE.sub(lambda m: "``" + m.group(1).rsplit(".", 1)[-1] + "``", text)
    text = _ROLE.sub(lambda m: "``" + m.group(1) + "``", text)
    text = text.replace("``", "`")
    # "Text::" followed by an indented block is a literal block.
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1] if not line.rstrip().endswith(" ::") else line.rstrip()[:-3])
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            out.extend(["", "```text", *inspect.cleandoc("\n".join(block)).splitlines(), "```", ""])
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip()


def unwrap(text: str) -> str:
    """Join the lines of each paragraph (Markdown does not need them wrapped)."""
    paragraphs: list[str] = []
    in_code = False
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            in_code = not in_code
            paragraphs.append(line)
            continue
        if in_code:
            paragraphs.append(line)
            continue
        if not line.strip():
            if current:
                paragraphs.append(" ".join(current))
                current = []
            paragraphs.append("")
            continue
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(paragraphs)).strip()


def signature(fn: Callable[..., Any]) -> str:
    """``name(arg: Type, ...) -> Return`` from the annotations as written."""
    sig = inspect.signature(fn)
    parts = []
    for param in sig.parameters.values():
        ann = param.annotation
        if ann is inspect.Parameter.empty:
            parts.append(param.name)
        else:
            parts.append(f"{param.name}: {ann if isinstance(ann, str) else inspect.formatannotation(ann)}")
    ret = sig.return_annotation
    ret_text = "" if ret is inspect.Signature.empty else f" -> {ret if isinstance(ret, str) else inspect.formatannotation(ret)}"
    return f"{fn.__name__}({', '.join(parts)}){ret_text}"


def first_sentence(text: str) -> str:
    flat = " ".join(unwrap(rst_to_markdown(text)).split())
    flat = flat.replace("**Per-step.** ", "")
    match = re.match(r"(.+?\.)(\s|$)", flat)
    return (match.group(1) if match else flat).replace("|", "\\|")


def render_hook(fn: Callable[..., Any]) -> list[str]:
    body, params = parse_docstring(fn.__doc__)
    lines = [f"### `{fn.__name__}`", "", "```python", signature(fn), "```", ""]
    if body:
        lines += [unwrap(rst_to_markdown(body)), ""]
    if params:
        lines.append("Parameters:")
        lines.append("")
        for name, text in params.items():
            lines.append(f"- `{name}`: {unwrap(rst_to_markdown(text))}")
        lines.append("")
    return lines


def render(hookspecs: Any = None) -> str:
    """The complete ``hooks.md`` page."""
    if hookspecs is None:
        from ember import hookspecs
    hooks = hook_functions(hookspecs)
    per_step = set(getattr(hookspecs, "PER_STEP_HOOKS", ()))
    event_hooks = [fn for fn in hooks if fn.__name__ not in per_step]
    step_hooks = [fn for fn in hooks if fn.__name__ in per_step]

    lines = [
        "<!-- Generated by docs/gen_hook_reference.py from ember/hookspecs.py (core/hookspecs.py). -->",
        "<!-- Do not edit by hand: change the docstrings and run `python docs/gen_hook_reference.py`. -->",
        "",
        "# Hook reference",
        "",
        unwrap(rst_to_markdown(inspect.cleandoc(hookspecs.__doc__ or ""))),
        "",
        "## Summary",
        "",
        "| hook | tier | fires |",
        "|---|---|---|",
    ]
    for fn in hooks:
        tier = "per-step" if fn.__name__ in per_step else "event"
        lines.append(f"| [`{fn.__name__}`](#{fn.__name__}) | {tier} | {first_sentence(fn.__doc__ or '')} |")
    lines += [
        "",
        "## Event hooks",
        "",
        "These fire once per run, epoch, evaluation or event.",
        "",
    ]
    for fn in event_hooks:
        lines += render_hook(fn)
    lines += [
        "## Per-step hooks",
        "",
        "These fire once per batch (see `ember.hookspecs.PER_STEP_HOOKS`). Their",
        "implementations are resolved once per run into a plain tuple, so a",
        "per-step hook that nobody implements costs nothing; one that is implemented",
        "runs on every batch, so keep it cheap.",
        "",
    ]
    for fn in step_hooks:
        lines += render_hook(fn)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if the committed page differs")
    group.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run `python docs/gen_hook_reference.py`.", file=sys.stderr)
            return 1
        print(f"{OUTPUT} is up to date.")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
