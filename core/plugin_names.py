"""Names that select plugins: the allow-list (``EMBER_PLUGINS``,
``[plugins] enable``, ``Trainer(plugins=[...])``) and the deny-list
(``EMBER_DISABLE_PLUGINS``, ``[plugins] disable``).

A name is an entry-point name (``dummy``), a distribution name
(``ember-dummy-plugin``), both (``ember-dummy-plugin:dummy``, which picks one
distribution when two publish the same entry-point name), or, for the
deny-list, a built-in (``ember.plugins.loggers.wandb`` or ``wandb``).

A name that matches nothing installed is reported with the closest installed
name: a warning, or an error when the stack declares ``required_plugins``."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from ember.plugin_manager import EmberPluginWarning
from ember.suggest import closest, did_you_mean


def canonical(name: str) -> str:
    """``Ember_Dummy.Plugin:x`` -> ``ember-dummy-plugin:x`` (PEP 503 for the distribution part)."""
    import re

    dist, sep, entry = name.partition(":")
    return re.sub(r"[-_.]+", "-", dist).lower() + sep + entry


def entry_point_names(ep: Any, dist_name: str) -> set[str]:
    """Every name that selects entry point ``ep`` of ``dist_name``."""
    return {ep.name, canonical(dist_name), canonical(f"{dist_name}:{ep.name}")}


def selects(names: Iterable[str], ep: Any, dist_name: str) -> bool:
    wanted = {n for n in names} | {canonical(n) for n in names}
    return bool(wanted & entry_point_names(ep, dist_name))


def installed_names(entry_points: Iterable[tuple[Any, str, str]]) -> list[str]:
    """The names a list may use: entry points, distributions, ``dist:entry``, built-ins."""
    from ember.plugin_manager import BUILTIN_PLUGINS

    names: list[str] = []
    for ep, dist_name, _ in entry_points:
        names += [ep.name, dist_name, f"{dist_name}:{ep.name}"]
    names += [*BUILTIN_PLUGINS, *(m.rsplit(".", 1)[-1] for m in BUILTIN_PLUGINS)]
    return names


def unknown_names(settings: Any, entry_points: Iterable[tuple[Any, str, str]]) -> list[str]:
    """One message per name in ``settings.allow`` / ``settings.disable`` that
    matches no installed plugin, with the closest installed name."""
    eps = list(entry_points)
    known = installed_names(eps)
    known_canonical = {canonical(n) for n in known} | set(known)
    external = sorted({ep.name for ep, _, _ in eps})
    origins: Mapping[str, str] = getattr(settings, "origins", {}) or {}
    problems = []
    for kind, names in (("allow", settings.allow), ("disable", settings.disable)):
        for name in names:
            if name in known_canonical or canonical(name) in known_canonical:
                continue
            where = origins.get(f"{kind}:{name}") or (
                "EMBER_PLUGINS / plugins.enable" if kind == "allow" else "EMBER_DISABLE_PLUGINS / plugins.disable"
            )
            hint = did_you_mean(name, known)
            listing = f"installed plugins: {', '.join(external)}" if external else "no entry-point plugin is installed"
            effect = " Entry-point plugins not in the list are not loaded." if kind == "allow" else ""
            problems.append(f"{where}: {name!r} matches no installed plugin ({listing}).{hint}{effect} Run `ember plugins` to see them.")
    return problems


class UnknownPluginNameWarning(EmberPluginWarning):
    """A plugin allow- or deny-list names a plugin that is not installed."""


def warn_unknown(settings: Any, entry_points: Iterable[tuple[Any, str, str]]) -> None:
    for message in unknown_names(settings, entry_points):
        warnings.warn(message, UnknownPluginNameWarning, stacklevel=1)


def check_stack_plugin_names(stack: Any, environ: Mapping[str, str]) -> None:
    """For the ``ember`` command, before anything is built: an unknown plugin
    name, named by where it was set (the stack file's key or the variable),
    is an error (:class:`~ember.stack.StackError`) when the stack declares
    ``required_plugins``, else a warning. The Trainer's own warning about the
    same names is silenced afterwards, so each is reported once."""
    from ember.plugin_manager import _entry_points
    from ember.stack import StackError

    problems = unknown_names(stack.autoload_settings(environ), _entry_points())
    if problems and stack.required_plugins:
        raise StackError(problems[0] + " (an error because the stack declares required_plugins)")
    for message in problems:
        warnings.warn(message, UnknownPluginNameWarning, stacklevel=1)
    warnings.filterwarnings("ignore", category=UnknownPluginNameWarning)


def argument_mismatch(exc: Exception, name: str, source: Any) -> str:
    """ember's message for pluggy's "Argument(s) {...} are declared in the
    hookimpl but can not be found in the hookspec": the hook, the spec's
    arguments, the closest name, the plugin and its distribution."""
    import re

    from ember.plugin_manager import _HOOK_NAMES, spec_argnames

    text = str(exc)
    hook = re.search(r"for hook '(\w+)'", text)
    bad = re.search(r"Argument\(s\) \{(.*)\} are declared", text)
    if hook is None or bad is None or hook.group(1) not in _HOOK_NAMES:
        return text
    spec = spec_argnames(hook.group(1))
    wrong = [a.strip().strip("'\"") for a in bad.group(1).split(",")]
    hints = [f"{a!r} (did you mean {closest(a, spec)!r}?)" if closest(a, spec) else repr(a) for a in wrong]
    if source is not None and source.distribution:
        origin = f" from distribution {source.distribution} {source.version}".rstrip()
    else:
        origin = f" ({source.target})" if source is not None and source.target else ""
    return (
        f"Plugin {name!r}{origin} implements {hook.group(1)} with argument{'s' if len(wrong) > 1 else ''} {', '.join(hints)}, "
        f"which the hook does not have. {hook.group(1)}'s arguments are ({', '.join(spec)}); rename the argument "
        "(an implementation may take any of them, by name)."
    )


def collision(ep: Any, dist_name: str, version: str, rivals: list[tuple[Any, str, str]]) -> Any:
    """The failure recorded when two distributions publish entry point ``ep.name``."""
    from ember.plugin_manager import PluginFailure

    everyone = [(ep, dist_name, version), *rivals]
    listed = " and ".join(f"{d} {v} ({e.value})" for e, d, v in everyone)
    picks = " or ".join(f"EMBER_PLUGINS={d}:{e.name}" for e, d, _ in everyone)
    return PluginFailure(
        name=ep.name,
        distribution=dist_name,
        version=version,
        target=ep.value,
        error=f"the entry-point name {ep.name!r} is published by {len(everyone)} distributions, {listed}; ember loaded none of them",
        fix=f"pick one with {picks} (or the same in plugins.enable), or uninstall the one you do not trust",
    )
