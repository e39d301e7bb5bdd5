"""``ember plugins``: every plugin, where it comes from, its hooks and roles,
and the ones that failed, were disabled or were not loaded (and why)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ember._version import __version__


def collect_plugins(config: str | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything ``ember plugins`` reports, as plain data. Never raises for a
    broken plugin: failures are part of the report."""
    from ember.plugin_manager import (
        BUILTIN_PLUGINS,
        ENTRY_POINT_GROUP,
        AutoloadSettings,
        PluginManager,
        PluginSource,
        _entry_points,
        default_plugin_manager,
    )
    from ember.plugin_names import selects
    from ember.stack import StackError, load_stack

    environ = dict(os.environ if environ is None else environ)
    notes: list[str] = []
    settings = AutoloadSettings.from_env(environ)
    try:
        stack = load_stack(config, Path.cwd(), (), environ, check=False)
        settings = stack.autoload_settings(environ)
    except StackError as exc:
        notes.append(f"the stack's [plugins] section was not applied: {exc}")

    import warnings

    from ember.plugin_names import UnknownPluginNameWarning

    pm: PluginManager | None = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnknownPluginNameWarning)
            pm = default_plugin_manager(settings, strict=False)
        for w in caught:
            if issubclass(w.category, UnknownPluginNameWarning):
                notes.append(str(w.message))
            else:  # pragma: no cover - not ours: show it as it came
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except Exception as exc:  # pragma: no cover - load_entrypoints records failures itself
        notes.append(f"loading plugins failed: {type(exc).__name__}: {exc}")
    if pm is None:  # pragma: no cover - see the note
        pm = PluginManager()
    roles: dict[str, list[dict[str, str]]] = {}
    try:
        registry = pm.build_registry()
        for entry in registry.entries():
            roles.setdefault(entry.plugin, []).append({"kind": entry.kind, "name": entry.name})
    except Exception as exc:
        notes.append(f"building the role registry failed: {type(exc).__name__}: {exc}")

    plugins: list[dict[str, Any]] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        source = pm.sources.get(name) or PluginSource("explicit", "", "")
        try:
            hooks = pm.hooks_of(name)
        except Exception:  # pragma: no cover
            hooks = []
        plugins.append(
            {
                "name": name,
                "kind": source.kind,
                "distribution": source.distribution,
                "version": source.version,
                "target": source.target,
                "status": "loaded",
                "hooks": hooks,
                "roles": roles.get(name, []),
            }
        )
    failures = [
        {"name": f.name, "distribution": f.distribution, "version": f.version, "target": f.target, "error": f.error, "fix": f.fix}
        for f in pm.failures
    ]
    failed_names = {f.name for f in pm.failures}
    for f in failures:
        if f["name"] in {p["name"] for p in plugins}:
            for p in plugins:  # registered, then its register_roles raised
                if p["name"] == f["name"]:
                    p["status"], p["error"] = "failed", f["error"]
            continue
        kind = "builtin" if f["name"] in BUILTIN_PLUGINS else "entrypoint"
        plugins.append({**f, "kind": kind, "status": "failed", "hooks": [], "roles": []})
    loaded = {p["name"] for p in plugins}
    for name in pm.disabled:
        if name in loaded:
            continue
        kind = "builtin" if name in BUILTIN_PLUGINS else "entrypoint"
        plugins.append(
            {
                "name": name,
                "kind": kind,
                "distribution": "ember" if kind == "builtin" else "",
                "version": __version__ if kind == "builtin" else "",
                "target": name,
                "status": "disabled",
                "hooks": [],
                "roles": [],
            }
        )
        loaded.add(name)
    allow = set(settings.allow)
    try:
        found = _entry_points(ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover
        found = []
    for ep, dist_name, version in found:
        for p in plugins:  # fill in the distribution of disabled entry points
            if p["name"] == ep.name and p["status"] == "disabled" and not p["distribution"]:
                p["distribution"], p["version"], p["target"] = dist_name, version, ep.value
        if ep.name in loaded or ep.name in failed_names:
            continue
        why = (
            "not in the allow-list (EMBER_PLUGINS / plugins.enable)"
            if allow and not selects(allow, ep, dist_name)
            else "autoload is off (EMBER_DISABLE_PLUGIN_AUTOLOAD / plugins.autoload)"
        )
        plugins.append(
            {
                "name": ep.name,
                "kind": "entrypoint",
                "distribution": dist_name,
                "version": version,
                "target": ep.value,
                "status": "not loaded",
                "reason": why,
                "hooks": [],
                "roles": [],
            }
        )
        loaded.add(ep.name)
    return {
        "ember_version": __version__,
        "settings": {"autoload": settings.autoload, "allow": list(settings.allow), "disable": list(settings.disable)},
        "plugins": plugins,
        "failures": failures,
        "notes": notes,
    }


def add_parser(sub: Any) -> None:
    """Add ``ember plugins`` to ``ember``'s subparsers."""
    from ember.commands.common import config_arg

    p = sub.add_parser("plugins", help="list plugins: hooks, roles, failures", allow_abbrev=False)
    config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    report = collect_plugins(args.config)
    if args.json:
        print(json.dumps(report, indent=2, default=repr))
        return 0
    s = report["settings"]
    print(
        f"ember {report['ember_version']}  autoload: {'on' if s['autoload'] else 'off'}  "
        f"allow-list: {', '.join(s['allow']) or '-'}  disabled: {', '.join(s['disable']) or '-'}"
    )
    plugins = report["plugins"]
    headers = ("NAME", "KIND", "DISTRIBUTION", "VERSION", "STATUS")
    table = [(p["name"], p["kind"], p["distribution"] or "-", p["version"] or "-", p["status"]) for p in plugins]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(headers)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for p, row in zip(plugins, table, strict=True):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if p["hooks"]:
            print(f"    hooks: {', '.join(p['hooks'])}")
        if p["roles"]:
            print(f"    roles: {', '.join(r['kind'] + ' ' + r['name'] for r in p['roles'])}")
        if p.get("error"):
            print(f"    error: {p['error']}")
        if p.get("reason"):
            print(f"    reason: {p['reason']}")
    counts: dict[str, int] = {}
    for p in plugins:
        counts[p["status"]] = counts.get(p["status"], 0) + 1
    print()
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    for f in report["failures"]:
        if f["distribution"] == "ember":
            advice = (
                f"This is a bug in ember or a broken install; set EMBER_DISABLE_PLUGINS={f['name'].rsplit('.', 1)[-1]} to run without it."
            )
        else:
            fix = f.get("fix") or f"fix or uninstall it (pip uninstall {f['distribution']})"
            advice = f"{fix[:1].upper()}{fix[1:].rstrip('.')}, or set EMBER_DISABLE_PLUGINS={f['name']}."
        print(
            f"failed: {f['name']} from {f['distribution']} {f['version']} ({f['target']}): {f['error'].rstrip('.')}. {advice}",
            file=sys.stderr,
        )
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0
