"""``required_plugins``: the plugin distributions (and versions) a stack needs,
checked before anything is built. Re-exported by :mod:`ember.plugin_manager`."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from importlib import metadata as importlib_metadata


class RequiredPluginsError(Exception):
    """Plugins a stack requires (``required_plugins``) are missing or of the wrong version."""


def check_required(requirements: Iterable[str], *, where: str | None = None) -> None:
    """Check that every requirement (``"ember-foo>=1.2"``, ``"ember-bar"``) is
    installed in a matching version. Raises one :class:`RequiredPluginsError`
    listing every problem and the ``pip install`` command that fixes them;
    returns ``None`` when all are satisfied. Markers are honoured: a
    requirement whose marker does not hold here is skipped. ``where`` names
    the setting in the message (``"ember.toml: required_plugins"``)."""
    from packaging.requirements import InvalidRequirement, Requirement

    problems: list[str] = []
    to_install: list[str] = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"{text!r} is not a valid requirement ({str(exc).splitlines()[0]}); write it like 'ember-foo>=1.2'")
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        wanted = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "") + str(req.specifier)
        try:
            installed = importlib_metadata.version(req.name)
        except importlib_metadata.PackageNotFoundError:
            problems.append(f"{text}: not installed")
            to_install.append(wanted)
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{text}: version {installed} is installed")
            to_install.append(wanted)
    if not problems:
        return
    lines = [f"{where or 'required_plugins'}: {len(problems)} required plugin{'s are' if len(problems) > 1 else ' is'} not satisfied:"]
    lines += [f"  - {p}" for p in problems]
    if to_install:
        lines.append("Install them with:")
        lines.append("  pip install " + " ".join(shlex.quote(r) for r in to_install))
    raise RequiredPluginsError("\n".join(lines))
