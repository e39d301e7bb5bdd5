#!/usr/bin/env python
"""Does ``torch.compile`` pay on CPU? Eager against compiled, raw and through ember.

Workloads (batches already in memory, so only the step is timed):

* ``mlp``: the 32-64-1 MLP of ``benchmarks/overhead.py``, batch 64, SGD;
* ``digits``: the CNN of ``examples/digits`` (two 3x3 conv blocks, about 77k
  parameters), batch 64 of 1x8x8, AdamW (its LR schedule left out).

Variants, in one process, with the same model weights, data and optimizer:

* ``raw eager``: forward, loss, backward, step, zero_grad;
* ``raw compiled``: the same loop with ``torch.compile(model)``;
* ``raw compiled step``: ``torch.compile`` of forward + loss together;
* ``ember eager``: ``trainer.fit(module)`` (bare trainer, as in overhead.py);
* ``ember compiled``: ``trainer.fit(torch.compile(module))``.

Compile time is what the first steps of a compiled variant take beyond
eager ones (measured once, on a fresh dynamo cache; inductor's on-disk
cache is cleared first unless ``--keep-cache``). Steady-state time per step
is measured as in ``overhead.py``: each variant timed for N and 2N steps
(``(t(2N) - t(N)) / N``), variants interleaved in a shuffled order for
several repetitions, medians reported, ratios are eager / compiled (above 1:
compiling is faster). torch runs on ``--threads`` threads (default 1);
the clock is elapsed time.

Usage::

    python benchmarks/compile_cpu.py [--workloads mlp,digits] [--steps N] [--repeats R] [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples", "digits"))
import overhead  # noqa: E402

overhead.clock = time.perf_counter


def workload(name: str) -> tuple[Any, Any, Callable[[Any], Any], Any]:
    """(model, batch, optimizer factory, loss function)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if name == "mlp":
        model = overhead.make_mlp()
        batch = (torch.randn(overhead.BATCH, overhead.IN_FEATURES), torch.randn(overhead.BATCH, 1))
        return model, batch, lambda p: torch.optim.SGD(p, lr=1e-3), F.mse_loss
    from model import DigitsCNN

    net = DigitsCNN()
    model = torch.nn.Sequential(net.features, net.classifier)
    batch = (torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    return model, batch, lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-4), F.cross_entropy


def raw_runner(model: Any, batch: Any, make_opt: Any, loss_fn: Any, compiled_step: bool) -> Callable[[int], float]:
    import torch

    optimizer = make_opt(model.parameters())
    x, y = batch
    if compiled_step:
        step = torch.compile(lambda x, y: loss_fn(model(x), y))
    else:
        step = lambda x, y: loss_fn(model(x), y)  # noqa: E731

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            loss = step(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return time.perf_counter() - start

    return run


def ember_runner(model: Any, batch: Any, make_opt: Any, loss_fn: Any, compiled: bool, root: str) -> Callable[[int], float]:
    import torch

    import ember

    class Wrapped(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return loss_fn(self(x), y)

        def configure_optimizers(self) -> Any:
            return make_opt(self.parameters())

    module = Wrapped()
    target = torch.compile(module) if compiled else module

    def run(n: int) -> float:
        trainer = overhead.bench_trainer(root)
        start = time.perf_counter()
        trainer.fit(target, overhead.Batches(batch, n))
        return time.perf_counter() - start

    return run


def measure(name: str, steps: int, repeats: int, root: str) -> dict[str, Any]:
    import torch._dynamo

    torch._dynamo.reset()
    base, batch, make_opt, loss_fn = workload(name)
    runs: dict[str, Callable[[int], float]] = {
        "raw eager": raw_runner(copy.deepcopy(base), batch, make_opt, loss_fn, False),
        "raw compiled": raw_runner(torch.compile(copy.deepcopy(base)), batch, make_opt, loss_fn, False),
        "raw compiled step": raw_runner(copy.deepcopy(base), batch, make_opt, loss_fn, True),
        "ember eager": ember_runner(copy.deepcopy(base), batch, make_opt, loss_fn, False, root),
        "ember compiled": ember_runner(copy.deepcopy(base), batch, make_opt, loss_fn, True, root),
    }
    first: dict[str, float] = {}
    for v, run in runs.items():  # the first 3 steps: compiling happens here
        first[v] = run(3)
    eager_first = first["raw eager"]
    compile_s = {v: max(0.0, t - eager_first) for v, t in first.items() if "compiled" in v}
    rng = random.Random(0)
    samples: dict[str, list[float]] = {v: [] for v in runs}
    for _ in range(repeats):
        order = list(runs)
        rng.shuffle(order)
        for v in order:
            samples[v].append(overhead.per_step_us(runs[v], steps))
    med = {v: statistics.median(s) for v, s in samples.items()}
    return {
        "workload": name,
        "us_per_step": med,
        "speedup_raw": med["raw eager"] / med["raw compiled"],
        "speedup_raw_step": med["raw eager"] / med["raw compiled step"],
        "speedup_ember": med["ember eager"] / med["ember compiled"],
        "compile_s": compile_s,
        "samples_us": samples,
    }


def report(results: list[dict[str, Any]]) -> str:
    lines = [f"{'workload':<9}{'variant':<20}{'us/step':>10}{'first 3 steps beyond eager':>28}"]
    for r in results:
        for v, t in r["us_per_step"].items():
            c = r["compile_s"].get(v)
            lines.append(f"{r['workload']:<9}{v:<20}{t:>10.1f}{'' if c is None else f'{c:>26.1f} s':>28}")
        lines.append(
            f"{'':<9}eager/compiled: raw {r['speedup_raw']:.2f}x, raw whole step {r['speedup_raw_step']:.2f}x, ember {r['speedup_ember']:.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="torch.compile against eager on CPU, raw and through ember.")
    parser.add_argument("--workloads", default="mlp,digits")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-cache", action="store_true", help="keep inductor's on-disk cache (compile time then measures a cache hit)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if not args.keep_cache:
        cache = tempfile.mkdtemp(prefix="ember-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    results = []
    with tempfile.TemporaryDirectory(prefix="ember-compile-") as root:
        for name in args.workloads.split(","):
            results.append(measure(name, args.steps, args.repeats, root))
    print(report(results))
    print(
        f"(median of {args.repeats} interleaved repetitions of {args.steps} vs {2 * args.steps} steps, wall clock, "
        f"{args.threads} torch thread(s); {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, torch {torch.__version__})"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"threads": args.threads, "results": results}, fh, indent=2)
    if not args.keep_cache:
        shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
