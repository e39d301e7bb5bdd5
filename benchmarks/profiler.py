#!/usr/bin/env python
"""What a profiler costs per training step: off, present but wrapping nothing, and ``simple``.

The workload and the method are those of ``benchmarks/overhead.py`` (a tiny
MLP on one in-memory batch; every variant timed for N and 2N steps so the
once-per-run costs cancel; interleaved, shuffled repetitions; medians of
per-repetition differences; the process's CPU time by default). Variants, all
``Trainer(enable_progress_bar=False, enable_model_summary=False,
enable_checkpointing=False, logger=False, num_sanity_val_steps=0)``:

* ``off``: ``profiler=None``, the default. The dispatch holds the raw
  callables; this script checks that none of them is a wrapper.
* ``identity``: a profiler object whose ``wrap`` returns ``fn`` unchanged.
  Its difference to ``off`` is what the seam itself costs per step (expected: 0).
* ``simple``: ``profiler="simple"``: every hook implementation timed, plus
  the profiler's own batch and epoch timing hooks. Its report is not printed.

Usage::

    python benchmarks/profiler.py [--steps N] [--repeats R] [--clock cpu|wall] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import overhead  # noqa: E402  (the shared workload and clock)


class IdentityProfiler:
    """A profiler that is there but changes nothing."""

    def wrap(self, hook_name: str, owner: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn


def make_trainer(root: str, profiler: Any) -> Any:
    return overhead.bench_trainer(root, profiler=profiler, accelerator="auto")


def dispatch_wrappers(trainer: Any) -> tuple[int, int]:
    """(wrapped, total) callables over every hook of the last run's dispatch."""
    from ember.plugin_manager import _HOOK_NAMES

    fns = [fn for name in _HOOK_NAMES for fn in getattr(trainer._dispatch, name)]
    return sum(hasattr(fn, "__wrapped__") or hasattr(fn, "ember_profiled") for fn in fns), len(fns)


def run_variant(batch: Any, n: int, profiler_factory: Callable[[], Any], root: str, check: dict[str, Any] | None = None) -> float:
    Bare, _ = overhead.ember_module_classes_cached()
    trainer = make_trainer(root, profiler_factory())
    module = Bare()
    clock = overhead.clock
    with contextlib.redirect_stdout(io.StringIO()):
        start = clock()
        trainer.fit(module, overhead.Batches(batch, n))
        elapsed = clock() - start
    if trainer.global_step != n:
        raise RuntimeError(f"took {trainer.global_step} steps, expected {n}")
    if check is not None:
        check["wrapped"], check["total"] = dispatch_wrappers(trainer)
    return elapsed


def measure(n: int, repeats: int, warmup: int, seed: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = (torch.randn(overhead.BATCH, overhead.IN_FEATURES), torch.randn(overhead.BATCH, 1))
    rng = random.Random(seed)
    checks: dict[str, dict[str, Any]] = {"off": {}, "identity": {}, "simple": {}}
    with tempfile.TemporaryDirectory(prefix="ember-prof-bench-") as root:
        variants: dict[str, Callable[[int], float]] = {
            "raw": lambda k: overhead.run_raw(batch, k),
            "off": lambda k: run_variant(batch, k, lambda: None, root, checks["off"]),
            "identity": lambda k: run_variant(batch, k, IdentityProfiler, root, checks["identity"]),
            "simple": lambda k: run_variant(batch, k, lambda: "simple", root, checks["simple"]),
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(warmup):
                for run in variants.values():
                    run(n // 4 or 1)
            samples: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(repeats):
                order = list(variants)
                rng.shuffle(order)
                for name in order:
                    samples[name].append(overhead.per_step_us(variants[name], n))

    def diff(a: str, b: str) -> float:
        return statistics.median(x - y for x, y in zip(samples[a], samples[b], strict=True))

    return {
        "steps": n,
        "repeats": repeats,
        **{f"{name}_us": statistics.median(v) for name, v in samples.items()},
        "off_vs_raw_us": diff("off", "raw"),
        "identity_vs_off_us": diff("identity", "off"),
        "simple_vs_off_us": diff("simple", "off"),
        "dispatch": {name: dict(c) for name, c in checks.items()},
        "samples_us": samples,
    }


def measure_calls(number: int = 200_000, repeats: int = 7) -> dict[str, float]:
    """Per call, in a tight loop (min of ``repeats``): a hook implementation
    called raw, the same through ``SimpleProfiler.wrap``, and the simple
    profiler's own pair of batch hooks. Far steadier than the per-step
    figures on a busy machine."""
    import timeit

    from ember.plugins.profilers import SimpleProfiler

    def hook(trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        return None

    prof = SimpleProfiler()
    timed = prof.wrap("on_train_batch_end", "callback:Bench", hook)
    args = (None, None, None, None, 0)
    start, end = prof.on_train_batch_start, prof.on_train_batch_end

    def best(stmt: Callable[[], Any]) -> float:
        return min(timeit.repeat(stmt, number=number, repeat=repeats, timer=overhead.clock)) / number * 1e6

    raw_us = best(lambda: hook(*args))
    timed_us = best(lambda: timed(*args))
    pair_us = best(lambda: (start(None, None, None, 0), end(None, None, None, None, 0)))
    return {"call_raw_us": raw_us, "call_timed_us": timed_us, "timing_per_call_us": timed_us - raw_us, "own_batch_hooks_us": pair_us}


def report(r: dict[str, Any]) -> str:
    d = r["dispatch"]
    rows = [
        ("raw PyTorch loop", f"{r['raw_us']:8.1f} us/step", ""),
        ("ember, profiler=None (off)", f"{r['off_us']:8.1f} us/step", f"{r['off_vs_raw_us']:+8.1f} us/step vs raw"),
        ("ember, profiler whose wrap returns fn", f"{r['identity_us']:8.1f} us/step", f"{r['identity_vs_off_us']:+8.1f} us/step vs off"),
        ('ember, profiler="simple"', f"{r['simple_us']:8.1f} us/step", f"{r['simple_vs_off_us']:+8.1f} us/step vs off"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    out.append(
        f"per hook implementation: raw call {r['call_raw_us']:.3f} us, timed by simple {r['call_timed_us']:.3f} us "
        f"(+{r['timing_per_call_us']:.3f} us); simple's own batch start+end hooks {r['own_batch_hooks_us']:.3f} us per batch"
    )
    out.append(
        f"dispatch wrappers: off {d['off'].get('wrapped')}/{d['off'].get('total')}, identity {d['identity'].get('wrapped')}/"
        f"{d['identity'].get('total')}, simple {d['simple'].get('wrapped')}/{d['simple'].get('total')} callables"
    )
    out.append(
        f"({r['steps']} vs {2 * r['steps']} steps, median of {r['repeats']} interleaved repetitions, {r['clock']} time; {r['machine']})"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-step cost of ember's profiler seam and of the simple profiler.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=sorted(overhead.CLOCKS), default="cpu")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    overhead.clock = overhead.CLOCKS[args.clock]

    import torch

    result = measure(args.steps, args.repeats, args.warmup, args.seed)
    result.update(measure_calls())
    result["clock"] = args.clock
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"
    print(report(result))
    if result["dispatch"]["off"].get("wrapped"):
        print("error: with profiler=None some dispatch callables are wrappers", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
