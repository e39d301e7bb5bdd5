"""``ember new plugin NAME``: a plugin distribution generated from the template
folder shipped in the package (``ember/templates/plugin``).

Every template file ends in ``.tmpl`` (so that neither packaging tools nor
test runners mistake the templates for ember's own modules); the suffix is
dropped when the file is written. Placeholders are ``__EMBER_<WORD>__``
tokens, replaced with :meth:`str.replace` in file contents and in path
segments (the package folder is called ``__EMBER_PACKAGE__``).

Standard library only: ``ember new`` must not import torch.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember._version import __version__

TEMPLATES = Path(__file__).parent.parent / "templates"  # in the ember package, not in commands/
SUFFIX = ".tmpl"
_TOKEN = re.compile(r"__EMBER_[A-Z_]+__")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*$")


class ScaffoldError(Exception):
    """The name or the destination cannot be used; the message says why and what to do."""


@dataclass
class PluginNames:
    """Every name the template needs, derived from the one the user typed."""

    distribution: str  # ember-best-loss
    package: str  # ember_best_loss
    entry_point: str  # best_loss  (the plugin's name in `ember plugins`)
    role: str  # best_loss   (what a stack writes: [[callbacks]] name = "best_loss")
    class_name: str  # BestLossCallback
    ember_requirement: str  # ember>=0.1,<1

    def substitutions(self) -> dict[str, str]:
        return {
            "__EMBER_DIST__": self.distribution,
            "__EMBER_PACKAGE__": self.package,
            "__EMBER_ENTRY_POINT__": self.entry_point,
            "__EMBER_ROLE__": self.role,
            "__EMBER_CLASS__": self.class_name,
            "__EMBER_REQUIREMENT__": self.ember_requirement,
            "__EMBER_VERSION__": __version__,
        }


def ember_requirement(version: str = __version__) -> str:
    """``ember>=X.Y,<X+1`` for the running ember: the versions a new plugin
    declares it supports."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    return f"ember>={major}.{minor},<{major + 1}"


def plugin_names(name: str) -> PluginNames:
    """``best-loss`` (or ``ember-best-loss``, ``best_loss``) -> the names of its distribution."""
    if not _NAME.match(name or ""):
        raise ScaffoldError(
            f"{name!r} cannot name a plugin: use letters, digits and single dashes or underscores, starting with a letter "
            "(for example: best-loss)."
        )
    words = [w.lower() for w in re.split(r"[-_]", name)]
    if words[0] == "ember":
        words = words[1:]
    if not words:
        raise ScaffoldError(f"{name!r} names ember itself; pick a name for the plugin, such as best-loss.")
    snake = "_".join(words)
    package = "ember_" + snake
    if keyword.iskeyword(snake):
        raise ScaffoldError(f"{name!r} is a Python keyword; pick another name.")
    class_name = "".join(w.capitalize() for w in words) + "Callback"
    return PluginNames(
        distribution="ember-" + "-".join(words),
        package=package,
        entry_point=snake,
        role=snake,
        class_name=class_name,
        ember_requirement=ember_requirement(),
    )


def render(text: str, substitutions: dict[str, str]) -> str:
    for token, value in substitutions.items():
        text = text.replace(token, value)
    left = sorted(set(_TOKEN.findall(text)))
    if left:  # a template bug, not a user error
        raise RuntimeError(f"template placeholders without a value: {', '.join(left)}")
    return text


def template_files(kind: str) -> list[Path]:
    root = TEMPLATES / kind
    return sorted(p for p in root.rglob("*" + SUFFIX) if p.is_file())


def new_plugin(name: str, directory: str | Path | None = None) -> Path:
    """Write the plugin distribution for ``name`` to ``directory`` (default
    ``./<distribution name>``) and return that directory. Refuses a directory
    that exists and is not empty."""
    names = plugin_names(name)
    dest = Path(directory) if directory else Path.cwd() / names.distribution
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ScaffoldError(f"{dest} already exists and is not an empty directory; choose another place with --dir PATH.")
    subs = names.substitutions()
    root = TEMPLATES / "plugin"
    files = template_files("plugin")
    if not files:  # pragma: no cover - a broken install
        raise ScaffoldError(f"the plugin template is missing from this ember installation ({root}); reinstall ember.")
    for source in files:
        relative = source.relative_to(root).as_posix()[: -len(SUFFIX)]
        target = dest / render(relative, subs)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(source.read_text(encoding="utf-8"), subs), encoding="utf-8")
    return dest


def next_steps(dest: Path) -> str:
    try:
        shown = dest.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = dest
    return (
        f"created {shown}\n\n"
        "next steps:\n"
        f"  cd {shown}\n"
        "  pip install -e .            # registers the ember.plugins entry point\n"
        "  pytest                      # the tests use the ember.testing fixtures\n"
        "  ember plugins               # lists the plugin and the callback it registers\n"
    )


# --------------------------------------------------------------------------- command line


def add_parser(sub: Any) -> None:
    """Add ``ember new`` (and its ``plugin`` template) to ``ember``'s subparsers."""
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


def run(args: argparse.Namespace) -> int:
    try:
        created = new_plugin(args.name, args.dir)
    except ScaffoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(next_steps(created))
    return 0
