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
* ``raw compiled +opt``: ``torch.compile(model)`` and the optimizer's step
  compiled as PyTorch's tutorial does it (``torch.compile(opt.step)``);
* ``ember eager``: ``trainer.fit(module)`` (bare trainer, as in overhead.py);
* ``ember compiled``: ``trainer.fit(torch.compile(module))``;
* ``ember compiled +opt``: ``trainer.fit(module)`` with
  ``Compile(optimizer_step=True)`` (forward and parameter update compiled);
* ``ember step+opt``: ``Compile(training_step=True, optimizer_step=True)``
  (forward + loss in one graph, and the update).

Every variant keeps one optimizer for all its runs (ember's modules return
it from ``configure_optimizers``), as one long training run would: a
compiled update is specialised to its optimizer, and a new optimizer per
timed run would recompile it each time.

Compile time is what the first 3 steps of a compiled variant take beyond
eager ones, in elapsed time, measured once per variant on inductor's on-disk
cache, which is fresh at the start unless ``--keep-cache``: the first variant
to compile a graph pays for it, later ones compiling the same graph mostly
hit that cache. Steady-state time per step is measured as in
``overhead.py``: each variant timed for N and 2N steps (``(t(2N) - t(N)) /
N``), variants interleaved in a shuffled order for several repetitions,
medians reported. Ratios: raw eager / variant for every variant, and for
ember's variants also ember eager / variant (above 1: the variant is
faster). torch runs on ``--threads`` threads (default 1); the clock is
elapsed time, or with ``--clock cpu`` the process's CPU time (as
``overhead.py`` uses by default: on a machine shared with other work it
leaves out the time this process waits for a core; use it with one thread).

Usage::

    python benchmarks/compile_cpu.py [--workloads mlp,digits] [--steps N] [--repeats R] [--threads T]
                                     [--variants "raw compiled,ember compiled +opt"] [--json PATH]
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

#: the clock every run is timed with (--clock); overhead's runners use it too
clock = overhead.clock = time.perf_counter


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


def raw_runner(
    model: Any, batch: Any, make_opt: Any, loss_fn: Any, compiled_step: bool, compiled_opt: bool = False
) -> Callable[[int], float]:
    import torch

    optimizer = make_opt(model.parameters())
    x, y = batch
    if compiled_step:
        step = torch.compile(lambda x, y: loss_fn(model(x), y))
    else:
        step = lambda x, y: loss_fn(model(x), y)  # noqa: E731
    update = torch.compile(optimizer.step) if compiled_opt else optimizer.step

    def run(n: int) -> float:
        start = clock()
        for _ in range(n):
            loss = step(x, y)
            loss.backward()
            update()
            optimizer.zero_grad()
        return clock() - start

    return run


def ember_runner(
    model: Any, batch: Any, make_opt: Any, loss_fn: Any, compiled: bool, root: str, callback: dict[str, Any] | None = None
) -> Callable[[int], float]:
    """``callback``: the arguments of a ``Compile`` callback added to each fit."""
    import torch

    import ember
    from ember.plugins.callbacks.compile import Compile

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
    optimizer = make_opt(module.parameters())
    module.configure_optimizers = lambda: optimizer  # one optimizer for every run
    target = torch.compile(module) if compiled else module

    def run(n: int) -> float:
        callbacks = [Compile(verbose=False, **callback)] if callback is not None else []
        trainer = overhead.bench_trainer(root, callbacks=callbacks)
        start = clock()
        trainer.fit(target, overhead.Batches(batch, n))
        return clock() - start

    return run


def measure(name: str, steps: int, repeats: int, root: str, variants: list[str] | None = None) -> dict[str, Any]:
    import torch._dynamo

    torch._dynamo.reset()
    base, batch, make_opt, loss_fn = workload(name)
    runs: dict[str, Callable[[int], float]] = {
        "raw eager": raw_runner(copy.deepcopy(base), batch, make_opt, loss_fn, False),
        "raw compiled": raw_runner(torch.compile(copy.deepcopy(base)), batch, make_opt, loss_fn, False),
        "raw compiled step": raw_runner(copy.deepcopy(base), batch, make_opt, loss_fn, True),
        "raw compiled +opt": raw_runner(torch.compile(copy.deepcopy(base)), batch, make_opt, loss_fn, False, True),
        "ember eager": ember_runner(copy.deepcopy(base), batch, make_opt, loss_fn, False, root),
        "ember compiled": ember_runner(copy.deepcopy(base), batch, make_opt, loss_fn, True, root),
        "ember compiled +opt": ember_runner(copy.deepcopy(base), batch, make_opt, loss_fn, False, root, {"optimizer_step": True}),
        "ember step+opt": ember_runner(
            copy.deepcopy(base), batch, make_opt, loss_fn, False, root, {"training_step": True, "optimizer_step": True}
        ),
    }
    if variants:
        runs = {v: r for v, r in runs.items() if v in variants or v in ("raw eager", "ember eager")}
    global clock
    timing_clock, clock = clock, time.perf_counter  # compile time is elapsed time (inductor may compile in subprocesses)
    first: dict[str, float] = {}
    for v, run in runs.items():  # the first 3 steps: compiling happens here
        first[v] = run(3)
    clock = timing_clock
    eager_first = first["raw eager"]
    compile_s = {v: max(0.0, t - eager_first) for v, t in first.items() if "eager" not in v}
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
        "vs_raw_eager": {v: med["raw eager"] / t for v, t in med.items()},
        "vs_ember_eager": {v: med["ember eager"] / t for v, t in med.items() if v.startswith("ember")},
        "compile_s": compile_s,
        "samples_us": samples,
    }


def report(results: list[dict[str, Any]]) -> str:
    head = f"{'workload':<9}{'variant':<21}{'us/step':>10}{'raw eager/it':>14}{'ember eager/it':>16}{'first 3 steps beyond eager':>28}"
    lines = [head]
    for r in results:
        for v, t in r["us_per_step"].items():
            c = r["compile_s"].get(v)
            e = r["vs_ember_eager"].get(v)
            lines.append(
                f"{r['workload']:<9}{v:<21}{t:>10.1f}{r['vs_raw_eager'][v]:>13.2f}x"
                f"{'' if e is None else f'{e:>15.2f}x':>16}{'' if c is None else f'{c:>26.1f} s':>28}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="torch.compile against eager on CPU, raw and through ember.")
    parser.add_argument("--workloads", default="mlp,digits")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--variants", help="comma-separated subset of the variants (the two eager ones are always run)")
    parser.add_argument("--keep-cache", action="store_true", help="keep inductor's on-disk cache (compile time then measures a cache hit)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    global clock
    clock = overhead.clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if not args.keep_cache:
        cache = tempfile.mkdtemp(prefix="ember-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    results = []
    with tempfile.TemporaryDirectory(prefix="ember-compile-") as root:
        for name in args.workloads.split(","):
            results.append(measure(name, args.steps, args.repeats, root, args.variants.split(",") if args.variants else None))
    print(report(results))
    print(
        f"(median of {args.repeats} interleaved repetitions of {args.steps} vs {2 * args.steps} steps, {args.clock} clock, "
        f"{args.threads} torch thread(s); {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, torch {torch.__version__})"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"threads": args.threads, "clock": args.clock, "results": results}, fh, indent=2)
    if not args.keep_cache:
        shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
