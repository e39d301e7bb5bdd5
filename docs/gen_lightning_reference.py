#!/usr/bin/env python
"""Generate ``docs/reference/lightning-api.md``: Lightning's public API, name by
name, next to what ember offers for it.

The table is computed, not kept by hand: the installed PyTorch Lightning (a
test-only dependency) is introspected, every name user code touches is looked
up in ember, and parameter names and defaults are compared. A name ember does
not provide must be listed, with a reason and the ember alternative, in
``tests/compat/exclusions.toml``; ``tests/compat/test_api_surface.py`` fails
on a name in neither place and on an exclusion that is no longer needed.

Usage::

    python docs/gen_lightning_reference.py           # rewrite the page
    python docs/gen_lightning_reference.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib
import inspect
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: ember depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "reference" / "lightning-api.md"
EXCLUSIONS = ROOT / "tests" / "compat" / "exclusions.toml"

#: Lightning's name for the module argument of callback hooks; ember calls it
#: ``module``. Hooks are called positionally, so only the spelling differs.
PARAM_RENAMES = {"pl_module": "module"}

#: ``(lightning object, ember object)`` for the core classes.
CORE_CLASSES = (
    ("LightningModule", "Module"),
    ("LightningDataModule", "DataModule"),
    ("Trainer", "Trainer"),
    ("Callback", "Callback"),
)
NAMESPACES = ("callbacks", "loggers", "strategies", "profilers")
#: The utilities user code imports (from ``lightning.pytorch.utilities`` and the top level).
UTILITIES = (
    ("utilities", "rank_zero_only"),
    ("utilities", "rank_zero_info"),
    ("utilities", "rank_zero_warn"),
    ("utilities", "rank_zero_debug"),
    ("utilities", "rank_zero_deprecation"),
    ("utilities", "grad_norm"),
    ("utilities", "AttributeDict"),
    ("utilities", "move_data_to_device"),
    ("utilities", "measure_flops"),
    ("utilities", "CombinedLoader"),
    ("", "seed_everything"),
)


@dataclass
class Row:
    section: str
    name: str  # e.g. "Trainer.__init__(benchmark)", "callbacks.EarlyStopping"
    lightning: str  # Lightning's signature / default
    ember: str  # where ember has it ("" when it does not)
    problem: str = ""  # why it does not match ("" when it does)
    exclusion: dict[str, Any] | None = None
    exclusion_key: str = ""


def _lightning():
    warnings.filterwarnings("ignore")
    import pytorch_lightning as pl

    return pl


def _public(cls: type, skip: tuple[type, ...] = ()) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_") and not any(hasattr(b, n) for b in skip))


def _params(obj: Any) -> list[inspect.Parameter] | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [p for n, p in sig.parameters.items() if n not in ("self", "cls")]


def _show(value: Any) -> str:
    """``repr`` without memory addresses (functions by name), so the page is stable."""
    if callable(value) and hasattr(value, "__name__") and not isinstance(value, type):
        return value.__name__
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


def _fmt_default(p: inspect.Parameter) -> str:
    return "required" if p.default is inspect.Parameter.empty else _show(p.default)


#: Defaults that differ only in ember's name for itself.
DEFAULT_EQUIVALENTS = {"lightning_logs": ("ember_logs", "ember")}


def _same_default(a: Any, b: Any) -> bool:
    if isinstance(a, str) and b in DEFAULT_EQUIVALENTS.get(a, ()):
        return True
    if a is inspect.Parameter.empty:
        return True  # Lightning requires it; an ember default only adds convenience
    if callable(a) and callable(b) and not isinstance(a, type):
        return getattr(a, "__name__", a) == getattr(b, "__name__", b)
    if isinstance(a, str) and isinstance(b, str):
        return str(getattr(a, "value", a)) == str(getattr(b, "value", b))
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a).__name__ == type(b).__name__ and dataclasses.asdict(a) == dataclasses.asdict(b)  # type: ignore[arg-type]
    try:
        return type(a) is type(b) and bool(a == b) or (a == b and {type(a), type(b)} <= {int, float})
    except Exception:
        return repr(a) == repr(b)


def compare_params(l_obj: Any, e_obj: Any) -> str:
    """"" when ``e_obj`` accepts every parameter of ``l_obj`` under the same
    name and kind with a compatible default; else what differs."""
    lp, ep = _params(l_obj), _params(e_obj)
    if lp is None or ep is None:
        return ""
    by_name = {p.name: p for p in ep}
    problems = []
    for p in lp:
        name = PARAM_RENAMES.get(p.name, p.name)
        q = by_name.get(name) or by_name.get(p.name)
        if q is None:
            if p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL:
                continue
            problems.append(f"no parameter `{p.name}`")
        elif p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or q.kind in (q.VAR_KEYWORD, q.VAR_POSITIONAL):
            if p.kind != q.kind:
                problems.append(f"`{p.name}` is {q.kind.description}, Lightning's is {p.kind.description}")
        elif not _same_default(p.default, q.default):
            problems.append(f"`{p.name}` defaults to {_fmt_default(q)}, Lightning's to {_fmt_default(p)}")
    positional = [PARAM_RENAMES.get(p.name, p.name) for p in lp if p.kind is p.POSITIONAL_OR_KEYWORD]
    e_positional = [p.name for p in ep if p.kind is p.POSITIONAL_OR_KEYWORD]
    if not problems and e_positional[: len(positional)] != positional and positional:
        problems.append(f"positional order {e_positional} differs from Lightning's {positional}")
    return "; ".join(problems)


def _sig(obj: Any) -> str:
    params = _params(obj)
    if params is None:
        return ""
    return "(" + ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={_show(p.default)}" for p in params) + ")"


def _member_kind(cls: type, name: str) -> str:
    raw = inspect.getattr_static(cls, name, None)
    if isinstance(raw, property):
        return "property"
    if callable(raw) or isinstance(raw, (staticmethod, classmethod)):
        return "method"
    return "attribute"


def _ember_has(e_cls: type, e_instance: Any, name: str) -> bool:
    if hasattr(e_cls, name):
        return True
    return e_instance is not None and name in vars(e_instance)


def _trainer_instance() -> Any:
    import ember

    return ember.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)


def _class_rows(section: str, label: str, l_cls: type, e_cls: Any, e_label: str, members: bool, skip: tuple[type, ...]) -> list[Row]:
    if e_cls is None:
        return [Row(section, label, "class", "", "ember has no such class")]
    rows = [Row(section, label, "class", e_label)]
    e_params = {p.name: p for p in _params(e_cls.__init__) or []}
    for p in _params(l_cls.__init__) or []:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        q = e_params.get(p.name)
        row = Row(section, f"{label}({p.name})", f"{p.name}={_fmt_default(p)}", f"{e_label}({p.name}={_fmt_default(q)})" if q else "")
        if q is None or q.kind in (q.VAR_KEYWORD, q.VAR_POSITIONAL):
            row.ember, row.problem = "", "no such parameter"
        elif not _same_default(p.default, q.default):
            row.problem = f"defaults to {_fmt_default(q)}"
        rows.append(row)
    if not members:
        return rows
    instance = _trainer_instance() if e_cls.__name__ == "Trainer" else None
    for name in _public(l_cls, skip):
        kind = _member_kind(l_cls, name)
        l_obj = getattr(l_cls, name)
        row = Row(section, f"{label}.{name}", kind if kind != "method" else _sig(l_obj), f"{e_label}.{name}")
        if not _ember_has(e_cls, instance, name):
            row.ember, row.problem = "", "missing"
        elif kind == "method" and callable(getattr(e_cls, name, None)):
            row.problem = compare_params(l_obj, getattr(e_cls, name))
        rows.append(row)
    return rows


def _ember_attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def build_rows() -> list[Row]:
    import torch

    pl = _lightning()
    import ember

    rows: list[Row] = []
    skips = {"LightningModule": (torch.nn.Module,), "LightningDataModule": (), "Trainer": (), "Callback": ()}
    for l_name, e_name in CORE_CLASSES:
        rows += _class_rows("Core classes", l_name, getattr(pl, l_name), getattr(ember, e_name), f"ember.{e_name}", True, skips[l_name])
    for ns in NAMESPACES:
        l_mod = importlib.import_module(f"pytorch_lightning.{ns}")
        for name in sorted(l_mod.__all__):
            l_cls = getattr(l_mod, name)
            e_cls = _ember_attr(f"ember.{ns}", name)
            rows += _class_rows(f"ember.{ns}", f"{ns}.{name}", l_cls, e_cls, f"ember.{ns}.{name}", False, ())
    for where, name in UTILITIES:
        l_mod = importlib.import_module("pytorch_lightning" + (f".{where}" if where else ""))
        l_obj = getattr(l_mod, name, None) or getattr(importlib.import_module(f"{l_mod.__name__}.rank_zero"), name)
        e_mod = f"ember.{where}" if where else "ember"
        e_obj = _ember_attr(e_mod, name)
        label = f"{where}.{name}" if where else name
        if e_obj is None:
            rows.append(Row("Utilities", label, _sig(l_obj), "", "missing"))
        else:
            problem = compare_params(l_obj, e_obj) if callable(l_obj) and not inspect.isclass(l_obj) else ""
            rows.append(Row("Utilities", label, _sig(l_obj), f"{e_mod}.{name}", problem))
    return rows


def load_exclusions() -> dict[str, dict[str, str]]:
    if not EXCLUSIONS.exists():
        return {}
    return tomllib.loads(EXCLUSIONS.read_text(encoding="utf-8")).get("exclude", {})


def _patterns(key: str, entry: dict[str, Any]) -> list[str]:
    """The row names an exclusion covers: its ``names`` (glob patterns), or
    the key itself with its members and parameters."""
    return list(entry.get("names") or [key, key + ".*", key + "(*)"])


def _covering(name: str, exclusions: dict[str, dict[str, Any]]) -> str | None:
    """The key of the exclusion that covers row ``name``, if any."""
    for key, entry in exclusions.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in _patterns(key, entry)):
            return key
    return None


def table() -> tuple[list[Row], list[str]]:
    """Every row with its exclusion attached, and what is stale: exclusion
    keys (or, for a key with ``names``, patterns) that cover no missing name."""
    rows = build_rows()
    exclusions = load_exclusions()
    used_patterns: set[tuple[str, str]] = set()
    for row in rows:
        if not row.problem:
            continue
        key = _covering(row.name, exclusions)
        if key is None:
            continue
        row.exclusion, row.exclusion_key = exclusions[key], key
        used_patterns |= {(key, p) for p in _patterns(key, exclusions[key]) if fnmatch.fnmatchcase(row.name, p)}
    stale = []
    for key, entry in exclusions.items():
        if "names" in entry:
            stale += [f"{key}: {p}" for p in entry["names"] if (key, p) not in used_patterns]
        elif not any(k == key for k, _ in used_patterns):
            stale.append(key)
    return rows, stale


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    rows, _stale = table()
    matched = sum(1 for r in rows if not r.problem)
    excluded = [r for r in rows if r.problem and r.exclusion]
    keys = sorted({r.exclusion_key for r in excluded})
    pl = _lightning()
    lines = [
        "# Lightning API reference",
        "",
        "<!-- Generated by docs/gen_lightning_reference.py from the installed PyTorch Lightning; do not edit. -->",
        "",
        f"Every public name of PyTorch Lightning {pl.__version__} that user code touches, and its ember",
        "counterpart. A name matches when ember has it with the same parameter names and",
        "compatible defaults (ember may add parameters after Lightning's). Callback hooks",
        "call Lightning's `pl_module` argument `module`; hooks are called positionally.",
        "A default that differs only by ember's own name for its logs (`lightning_logs` →",
        "`ember_logs`, or `ember` for MLflow's experiment) counts as compatible.",
        "Names ember deliberately does not provide are listed with the reason and the",
        "ember alternative. `tests/compat/test_api_surface.py` regenerates this table and",
        "fails when a Lightning name is neither provided nor excluded.",
        "",
        f"**{len(rows)} names: {matched} matched, {len(excluded)} excluded (under {len(keys)} exclusion entries).**",
        "",
        "Imports port one for one: `lightning.pytorch` → `ember` (`LightningModule` →",
        "`Module`, `LightningDataModule` → `DataModule`), and",
        "`lightning.pytorch.{callbacks,loggers,strategies,profilers,utilities}` →",
        "`ember.{callbacks,loggers,strategies,profilers,utilities}`.",
        "",
    ]
    if keys:
        exclusions = load_exclusions()
        lines += ["## Not provided", "", "| Lightning | Why | Instead, in ember |", "|---|---|---|"]
        for key in keys:
            ex = exclusions[key]
            names = [f"`{r.name}`" for r in excluded if r.exclusion_key == key]
            shown = ", ".join(names) if len(names) > 1 else f"`{key}`"
            lines.append(f"| {shown} | {_cell(ex.get('reason', ''))} | {_cell(ex.get('alternative', ''))} |")
        lines.append("")
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines += [f"## {section}", "", "| Lightning | Lightning signature | ember |", "|---|---|---|"]
        if r.problem and r.exclusion:
            status = "not provided (see above)"
        elif r.problem:
            status = f"**MISSING**: {_cell(r.problem)}"
        else:
            status = f"`{r.ember}`"
        lines.append(f"| `{r.name}` | {_cell(r.lightning) and '`' + _cell(r.lightning) + '`'} | {status} |")
        nxt = rows.index(r) + 1
        if nxt == len(rows) or rows[nxt].section != section:
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python docs/gen_lightning_reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
