"""``ember plot``: draw the curves the CSV logger wrote, to a PNG.

::

    ember plot RUN_DIR [RUN_DIR ...] [--metrics loss,val_acc] [--output PATH]

Every ``metrics.csv`` under the given directories (a directory may also be the
file itself) is one run: for example ``lightning_logs/version_3`` or a whole
``ember_logs`` directory with one run per version. Each metric gets its own
subplot, each run one line, with the logged ``step`` on the x axis. Rows that
leave a metric empty (the logger writes step and epoch metrics in separate
rows) are skipped for that metric. Without ``--output`` the PNG goes next to
the data: ``plot.png`` in the run directory, or in the closest directory that
holds every run plotted (``ember_logs/plot.png`` for a whole ``ember_logs``).

Only the standard library is imported at module level; matplotlib (the
``plot`` extra) is imported inside :func:`plot_runs`, with the non-interactive
Agg canvas: no window, no server.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ember.suggest import closest

METRICS_FILE = "metrics.csv"
#: Columns that are not curves: the x axis and the epoch counter logged with epoch metrics.
_NOT_METRICS = ("step", "epoch")


class PlotError(Exception):
    """Something the user can fix: a missing file, an unknown metric, no matplotlib."""


@dataclass
class Run:
    """One ``metrics.csv``: its label and, per metric, the (step, value) points."""

    label: str
    path: str
    columns: list[str] = field(default_factory=list)
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)


def find_metric_files(paths: list[str]) -> list[tuple[str, str]]:
    """``(given path, metrics.csv path)`` for every file found, sorted within
    each given path; raises :class:`PlotError` saying where it looked."""
    found: list[tuple[str, str]] = []
    missing: list[str] = []
    empty: list[str] = []
    for given in paths:
        if os.path.isfile(given):
            found.append((given, given))
            continue
        if not os.path.isdir(given):
            missing.append(given)
            continue
        here = []
        for root, dirs, files in os.walk(given):
            dirs.sort()
            if METRICS_FILE in files:
                here.append((given, os.path.join(root, METRICS_FILE)))
        if here:
            found.extend(here)
        else:
            empty.append(given)
    problems = []
    if missing:
        problems.append("no such file or directory: " + ", ".join(missing))
    if empty:
        problems.append(
            f"no {METRICS_FILE} found under: " + ", ".join(os.path.abspath(p) for p in empty) + " (searched every sub-directory)"
        )
    if problems:
        raise PlotError(
            "; ".join(problems)
            + f". Point ember plot at a directory the CSV logger wrote (e.g. ember_logs/version_0, or ember_logs for every version) or at a {METRICS_FILE}."
        )
    return found


def _labels(found: list[tuple[str, str]]) -> list[str]:
    """Short, distinct names: the run directory relative to what was given,
    prefixed with the given path when several were given."""
    several = len({g for g, _ in found}) > 1
    labels = []
    for given, path in found:
        run_dir = os.path.dirname(path)
        if os.path.isfile(given):
            label = run_dir or "."
        else:
            rel = os.path.relpath(run_dir, given)
            base = os.path.normpath(given)
            label = (base if rel == "." else os.path.join(base, rel)) if several or rel == "." else rel
        labels.append(label)
    # Still ambiguous (the same directory given twice): number them.
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        n = seen.get(label, 0)
        seen[label] = n + 1
        out.append(label if n == 0 else f"{label} ({n + 1})")
    return out


def _float(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_run(path: str, label: str) -> Run:
    """Read one ``metrics.csv`` into a :class:`Run`."""
    run = Run(label=label, path=path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            if "step" not in header:
                raise PlotError(
                    f"{path} has no 'step' column (columns: {', '.join(header) or 'none'}); is it a metrics.csv from ember's CSV logger?"
                )
            run.columns = [c for c in header if c not in _NOT_METRICS]
            for column in run.columns:
                run.series[column] = ([], [])
            for i, row in enumerate(reader):
                step = _float(row.get("step"))
                if step is None:
                    step = float(i)
                for column in run.columns:
                    value = _float(row.get(column))
                    if value is not None and not math.isnan(value):
                        xs, ys = run.series[column]
                        xs.append(step)
                        ys.append(value)
    except OSError as exc:
        raise PlotError(f"cannot read {path}: {exc}") from None
    return run


def load_runs(paths: list[str]) -> list[Run]:
    found = find_metric_files(paths)
    return [read_run(path, label) for (_, path), label in zip(found, _labels(found), strict=True)]


def choose_metrics(runs: list[Run], requested: list[str] | None) -> list[str]:
    """The metrics to draw: the requested ones (checked), else every metric
    that has at least one value in some run, in first-seen column order."""
    available: list[str] = []
    for run in runs:
        for column in run.columns:
            if column not in available and run.series[column][0]:
                available.append(column)
    if not requested:
        if not available:
            raise PlotError("the metrics files hold no values yet: " + ", ".join(r.path for r in runs))
        return available
    unknown = [m for m in requested if m not in available]
    if unknown:
        hints = []
        for m in unknown:
            close = closest(m, available)
            hints.append(f"{m!r}" + (f" (did you mean {close!r}?)" if close else ""))
        raise PlotError(f"unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(hints)}. Available: {', '.join(available) or 'none'}.")
    return requested


def plot_runs(runs: list[Run], metrics: list[str], output: str, *, dpi: int = 100, title: str | None = None) -> str:
    """Draw one subplot per metric, one line per run, and save a PNG to ``output``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("ember plot needs matplotlib: pip install 'ember[plot]' (or pip install matplotlib).") from None

    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for k, metric in enumerate(metrics):
        ax = axes[k // ncols][k % ncols]
        for run, color in zip(runs, colors, strict=True):
            xs, ys = run.series.get(metric, ([], []))
            if not xs:
                continue
            style: dict[str, Any] = {"marker": "o", "markersize": 3} if len(xs) < 30 else {}
            ax.plot(xs, ys, label=run.label, color=color, linewidth=1.4, **style)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if len(runs) > 1 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    for k in range(len(metrics), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if title:
        fig.suptitle(title)
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(output, format="png")
    return output


def default_output(runs: list[Run]) -> str:
    """``plot.png`` in the closest directory holding every run's ``metrics.csv``."""
    home = os.path.commonpath([os.path.dirname(os.path.abspath(run.path)) for run in runs])
    path = os.path.join(home, "plot.png")
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


# --------------------------------------------------------------------------- the command


def add_parser(sub: Any) -> None:
    """Add ``plot`` to ``ember``'s subparsers (standard library only)."""
    p = sub.add_parser(
        "plot",
        help="draw logged metrics (CSV logger) to a PNG",
        description=(
            "Draw the metrics the CSV logger wrote: every metrics.csv under the given directories is a run, "
            "each metric a subplot, each run a line, step on the x axis. Needs matplotlib (pip install 'ember[plot]')."
        ),
        allow_abbrev=False,
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run directory (e.g. ember_logs/version_0), a parent of several, or a metrics.csv"
    )
    p.add_argument("--metrics", metavar="A,B", help="comma-separated metric names (default: every metric with values)")
    p.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="PNG file to write (default: plot.png in the run directory, or in the directory holding all runs)",
    )
    p.add_argument("--title", metavar="TEXT", help="title above the plots")
    p.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")


def run(args: argparse.Namespace, overrides: list[str] | None = None) -> int:
    """``ember plot``: 0 when the PNG was written, 2 for anything the user must fix."""
    if overrides:
        print(f"error: `ember plot` takes no stack overrides (got {' '.join(overrides)}).", file=sys.stderr)
        return 2
    requested = [m.strip() for m in (args.metrics or "").split(",") if m.strip()] or None
    try:
        runs = load_runs(list(args.runs))
        metrics = choose_metrics(runs, requested)
        out = plot_runs(runs, metrics, args.output or default_output(runs), dpi=args.dpi, title=args.title)
    except PlotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {out}: {len(metrics)} metric{'s' if len(metrics) != 1 else ''} ({', '.join(metrics)}) from {len(runs)} run{'s' if len(runs) != 1 else ''}"
    )
    return 0
