"""Which ember a plugin distribution declares it supports, and refusing to
load one that excludes the running ember (see docs/plugin-authors.md,
"Declaring the ember versions you support"). Used by :mod:`ember.plugin_manager`
when it loads entry points."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.plugin_manager import PluginFailure


def running_ember_version() -> str:
    """The version of the ember that is running (a function, so tests can pretend)."""
    from ember._version import __version__

    return __version__


def declared_ember_requirement(requires: Iterable[str] | None, extras: Iterable[str] = ()) -> Any:
    """The ``ember`` requirement among a distribution's ``Requires-Dist`` lines
    (a :class:`packaging.requirements.Requirement`), or ``None``.

    Environment markers are evaluated for this interpreter. A requirement that
    applies only with one of the distribution's ``extras``
    (``ember>=0.2; extra == "ember"``) counts too: it still says which ember
    the plugin is written for. Unparsable lines are skipped (pip reports
    those, not ember)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    for line in requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != "ember":
            continue
        if req.marker is not None and not any(req.marker.evaluate({"extra": extra}) for extra in ["", *extras]):
            continue
        return req
    return None


def incompatibility(ep: Any, dist_name: str, version: str) -> PluginFailure | None:
    """A :class:`~ember.plugin_manager.PluginFailure` when the distribution of entry point ``ep``
    declares (``dependencies = ["ember>=0.1,<0.2"]``) a range of ember versions
    that excludes the running one; ``None`` when it fits or declares nothing."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        req = declared_ember_requirement(dist.requires, dist.metadata.get_all("Provides-Extra") or ())
    except Exception:  # unreadable metadata or marker: let loading decide
        return None
    if req is None or not req.specifier:
        return None
    running = running_ember_version()
    if _within(req.specifier, running):
        return None
    from ember.plugin_manager import PluginFailure

    return PluginFailure(
        name=ep.name,
        distribution=dist_name,
        version=version,
        target=ep.value,
        error=(
            f"it supports ember{req.specifier} (its declared dependency {str(req)!r}), but this is ember {running}; ember did not import it"
        ),
        fix=(
            f"upgrade it to a release that supports ember {running} (pip install --upgrade {dist_name}), "
            f"or install an ember it supports (pip install 'ember{req.specifier}')"
        ),
    )


def _within(specifier: Any, version: str) -> bool:
    """Whether ``version`` is in ``specifier``; a pre-release or development
    build counts as the release it leads to (ember 0.2.0.dev3 runs plugins
    declaring ``ember>=0.2``)."""
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version).base_version
    except InvalidVersion:
        return True  # an unreadable version of ember: do not block plugins on it
    return specifier.contains(release, prereleases=True)
