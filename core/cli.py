"""The ``ember`` command.

::

    ember fit | validate | test | predict [--config PATH] [--ckpt_path PATH] [--trainer.max_epochs 3 ...]
    ember config [--config PATH] [--json] [overrides ...]
    ember plugins [--json]
    ember checkpoint inspect PATH [--json]
    ember checkpoint consolidate DIR OUT
    ember plot RUN_DIR [RUN_DIR ...] [--metrics a,b] [--output plot.png]
    ember export CKPT [--format onnx|torch_export] [--output PATH] [--config PATH]
    ember new plugin NAME [--dir PATH]
    ember --version

Exit status: 0 on success, 2 for a usage or stack error, 1 when training fails.

Nothing heavy is imported at module level: ``ember --help`` and ``ember
--version`` import neither torch nor any plugin, and the commands import
torch only when they need it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ember._version import __version__

RUN_COMMANDS = ("fit", "validate", "test", "predict")
_TOP_KEYS = ("seed_everything", "required_plugins", "model", "data", "trainer", "plugins", "callbacks", "loggers")

_OVERRIDE_HELP = (
    "Any stack value can be overridden with a dotted key: --trainer.max_epochs 3, "
    "--model.init_args.lr=0.1, --seed_everything 7, --callbacks.0.init_args.patience 5. "
    "Values are TOML literals (3, 0.1, true, [1, 2]) or plain strings. Environment "
    "variables work too: EMBER_TRAINER__MAX_EPOCHS=3. Precedence: defaults < stack file "
    "< environment < command line."
)


class _UsageError(Exception):
    pass


def _is_override(token: str) -> bool:
    if not token.startswith("--") or token == "--":
        return False
    name = token[2:].split("=", 1)[0]
    return "." in name or "[" in name or name in _TOP_KEYS


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
        if _is_override(token):
            overrides.append(token)
            if "=" not in token and i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
                overrides.append(argv[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return rest, overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember",
        description="Train PyTorch models from a stack file ([tool.ember] in pyproject.toml, or ember.toml).",
        epilog=_OVERRIDE_HELP,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="PATH",
            help="stack file (default: ember.toml, else pyproject.toml with [tool.ember], searched upwards from the current directory)",
        )

    helps = {
        "fit": "train the stack's model",
        "validate": "run the validation loop once",
        "test": "run the test loop",
        "predict": "run prediction (save the outputs with --output)",
    }
    for name in RUN_COMMANDS:
        p = sub.add_parser(name, help=helps[name], description=f"{helps[name].capitalize()}. {_OVERRIDE_HELP}", allow_abbrev=False)
        config_arg(p)
        p.add_argument("--ckpt_path", metavar="PATH", help="checkpoint to start from ('best' and 'last' name the checkpoint callback's)")
        if name == "predict":
            p.add_argument("--output", metavar="PATH", help="save the list of predictions here with torch.save")
    p = sub.add_parser(
        "config",
        help="show the resolved stack and where each value came from",
        description=f"Show the resolved stack. {_OVERRIDE_HELP}",
        allow_abbrev=False,
    )
    config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("plugins", help="list plugins: hooks, roles, failures", allow_abbrev=False)
    config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    from ember import checkpoint_cli  # standard library only at import time

    checkpoint_cli.add_parser(sub)
    from ember import checkpoint_consolidate  # standard library only at import time

    checkpoint_consolidate.add_parser(sub.choices["checkpoint"])
    from ember import plot  # standard library only at import time; matplotlib only when a plot is drawn

    plot.add_parser(sub)
    from ember import export_cli  # standard library only at import time

    export_cli.add_parser(sub)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    rest, overrides = split_overrides(argv)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "plot":
        from ember import plot

        return plot.run(args, overrides)
    if args.command == "export":  # takes stack overrides (--model.class_path ...)
        from ember import export_cli

        return export_cli.run(args, overrides)
    if overrides and args.command in ("plugins", "checkpoint"):
        print(f"error: `ember {args.command}` takes no stack overrides (got {' '.join(overrides)}).", file=sys.stderr)
        return 2
    if args.command == "checkpoint" and getattr(args, "checkpoint_command", None) == "consolidate":
        from ember import checkpoint_consolidate

        return checkpoint_consolidate.run(args)
    if args.command == "checkpoint":
        from ember import checkpoint_cli

        return checkpoint_cli.run(args)
    if args.command == "new":
        if overrides:
            print(f"error: `ember new` takes no stack overrides (got {' '.join(overrides)}).", file=sys.stderr)
            return 2
        return _new(args)
    from ember.stack import StackError

    try:
        if args.command in RUN_COMMANDS:
            return _run(args, overrides)
        if args.command == "config":
            return _config(args, overrides)
        return _plugins(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- fit / validate / test / predict


def _run(args: argparse.Namespace, overrides: list[str]) -> int:
    from ember.plugin_manager import RequiredPluginsError
    from ember.stack import StackError, build, check_stack, default_registry, load_stack

    environ = dict(os.environ)
    stack = load_stack(args.config, Path.cwd(), overrides, environ, check=False, require_model=True)
    try:
        stack.check_required_plugins()
    except RequiredPluginsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    needs_registry = any(c.name is not None for c in [*stack.callbacks, *stack.loggers])
    registry = default_registry(stack, environ) if needs_registry else None
    check_stack(stack, registry=registry, environ=environ)

    import ember
    from ember.roles import UnknownNameError

    if stack.seed_everything is not None:
        ember.seed_everything(stack.seed_everything)
    try:
        module, datamodule, trainer_kwargs = build(stack, registry, environ)
    except StackError:
        raise
    except Exception:  # the user's __init__ raised: show where
        traceback.print_exc()
        print("error: creating the stack's model, data module, callbacks or loggers failed (traceback above).", file=sys.stderr)
        return 1
    try:
        trainer = ember.Trainer(**trainer_kwargs)
    except (UnknownNameError, ValueError) as exc:
        where = f" ({stack.source})" if stack.source else ""
        print(f"error: the stack's trainer settings{where} were rejected: {exc}", file=sys.stderr)
        return 2

    command = args.command
    try:
        if command == "fit":
            trainer.fit(module, datamodule=datamodule, ckpt_path=args.ckpt_path)
        elif command == "validate":
            trainer.validate(module, datamodule=datamodule, ckpt_path=args.ckpt_path, verbose=False)  # the table below shows the metrics
        elif command == "test":
            trainer.test(module, datamodule=datamodule, ckpt_path=args.ckpt_path, verbose=False)  # the table below shows the metrics
        else:
            predictions = trainer.predict(module, datamodule=datamodule, ckpt_path=args.ckpt_path)
            if args.output:
                import torch

                out = Path(args.output)
                if out.parent and not out.parent.exists():
                    out.parent.mkdir(parents=True, exist_ok=True)
                torch.save(predictions, out)
                count = len(predictions) if isinstance(predictions, list) else 1
                print(f"saved {count} prediction batch{'es' if count != 1 else ''} to {out}")
    except KeyboardInterrupt:
        raise
    except Exception:
        traceback.print_exc()
        print(f"error: `ember {command}` failed (traceback above).", file=sys.stderr)
        return 1
    _print_metrics(getattr(trainer, "callback_metrics", {}) or {})
    return 0


def _to_float(value: Any) -> float | None:
    try:
        if hasattr(value, "numel"):
            if value.numel() != 1:
                return None
            return float(value.detach().cpu().item())
        return float(value)
    except (TypeError, ValueError):
        return None


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = [(str(k), _to_float(v)) for k, v in sorted(metrics.items())]
    rows = [(k, v) for k, v in rows if v is not None]
    if not rows:
        return ""
    width = max(len("metric"), *(len(k) for k, _ in rows))
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{k:<{width}}  {v:.6g}" for k, v in rows]
    return "\n".join(lines)


def _print_metrics(metrics: dict[str, Any]) -> None:
    table = metrics_table(metrics)
    if table:
        print(table)


# --------------------------------------------------------------------------- config


def _config(args: argparse.Namespace, overrides: list[str]) -> int:
    from ember.stack import format_value, load_stack

    environ = dict(os.environ)
    stack = load_stack(args.config, Path.cwd(), overrides, environ)
    rows = stack.resolved()
    if args.json:
        payload = {
            "source": str(stack.source) if stack.source else None,
            "stack": stack.to_dict(),
            "values": [{"key": k, "value": v, "origin": o} for k, v, o in rows],
            "provenance": {k: o for k, _, o in rows},
        }
        print(json.dumps(payload, indent=2, default=repr))
        return 0
    if stack.source is not None:
        print(f"# stack: {stack.source}")
    else:
        print("# no stack file found (ember.toml, or pyproject.toml with [tool.ember]); defaults and overrides only")
    texts = [f"{k} = {format_value(v)}" for k, v, _ in rows]
    width = min(max((len(t) for t in texts), default=0), 60)
    for text, (_, _, origin) in zip(texts, rows, strict=True):
        print(f"{text:<{width}}  # {origin}")
    return 0


# --------------------------------------------------------------------------- plugins


def collect_plugins(config: str | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything ``ember plugins`` reports, as plain data. Never raises for a
    broken plugin: failures are part of the report."""
    from importlib import metadata

    from ember.plugin_manager import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, AutoloadSettings, PluginManager, PluginSource
    from ember.stack import StackError, load_stack

    environ = dict(os.environ if environ is None else environ)
    notes: list[str] = []
    settings = AutoloadSettings.from_env(environ)
    try:
        stack = load_stack(config, Path.cwd(), (), environ, check=False)
        settings = stack.autoload_settings(environ)
    except StackError as exc:
        notes.append(f"the stack's [plugins] section was not applied: {exc}")

    pm = PluginManager()
    pm.load_builtins(settings.disable, strict=False)
    try:
        pm.load_entrypoints(settings)
    except Exception as exc:  # pragma: no cover - load_entrypoints records failures itself
        notes.append(f"loading entry-point plugins failed: {type(exc).__name__}: {exc}")
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
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # pragma: no cover
        eps = []
    for ep in eps:
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        for p in plugins:  # fill in the distribution of disabled entry points
            if p["name"] == ep.name and p["status"] == "disabled" and not p["distribution"]:
                p["distribution"], p["version"], p["target"] = dist_name, version, ep.value
        if ep.name in loaded or ep.name in failed_names:
            continue
        names = {ep.name, dist_name}
        why = (
            "not in the allow-list (EMBER_PLUGINS / plugins.enable)"
            if allow and not names & allow
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


def _plugins(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------- new


def _new(args: argparse.Namespace) -> int:
    from ember import scaffold  # standard library only

    try:
        created = scaffold.new_plugin(args.name, args.dir)
    except scaffold.ScaffoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(scaffold.next_steps(created))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
