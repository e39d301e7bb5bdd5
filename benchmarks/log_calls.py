#!/usr/bin/env python
"""What ``self.log`` / ``self.log_dict`` cost per training step.

The workload and the method are those of ``benchmarks/overhead.py``: the tiny
MLP on one in-memory batch; every variant timed for N and 2N steps so that
the once-per-run costs cancel; variants interleaved in a shuffled order for
many repetitions, in one process; figures are medians, and a variant's
overhead is the median over repetitions of (variant - raw) within the same
repetition. The clock is the process's CPU time by default.

Variants (every ember one with the CSV logger and the default
``log_every_n_steps=50``, the setting most runs use; ``--log-every 1`` makes
every step a logger call):

* ``raw``: the plain PyTorch loop of ``overhead.py``;
* ``bare``: ember, ``training_step`` returns the loss, nothing logged;
* ``log``: ``self.log("loss", loss)`` every step;
* ``log_epoch``: ``self.log("loss", loss, on_step=True, on_epoch=True)``
  every step (``loss_step`` per step, the weighted epoch mean at the end);
* ``log_dict``: ``self.log_dict`` of 10 values every step (the loss and 9
  scalar tensors computed from it once, outside the timed loop's logging).

Usage::

    python benchmarks/log_calls.py [--steps N] [--repeats R] [--log-every K] [--clock cpu|wall] [--json PATH] [--check]
"""

from __future__ import annotations

import argparse
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

#: Overhead over the raw loop, in microseconds per step (issue 15).
TARGETS = {"bare": 10.0, "log": 10.0, "log_epoch": 15.0, "log_dict": 20.0}
VARIANTS = ("raw", "bare", "log", "log_epoch", "log_dict")
DICT_KEYS = tuple(f"m{i}" for i in range(9))


#: Where every step's start time goes (``--method stamps``); the raw loop
#: and every module append to it the same way, so both carry the same cost.
STAMPS: list[float] = []


def module_classes() -> dict[str, type]:
    import time

    import torch.nn.functional as F

    Base, _ = overhead.ember_module_classes_cached()
    stamp, stamps = time.perf_counter, STAMPS

    class Bare(Base):
        def training_step(self, batch, batch_idx):
            stamps.append(stamp())
            x, y = batch
            return F.mse_loss(self.net(x), y)

    class Log(Base):
        def training_step(self, batch, batch_idx):
            stamps.append(stamp())
            x, y = batch
            loss = F.mse_loss(self.net(x), y)
            self.log("loss", loss)
            return loss

    class LogEpoch(Base):
        def training_step(self, batch, batch_idx):
            stamps.append(stamp())
            x, y = batch
            loss = F.mse_loss(self.net(x), y)
            self.log("loss", loss, on_step=True, on_epoch=True)
            return loss

    class LogDict(Base):
        def training_step(self, batch, batch_idx):
            stamps.append(stamp())
            x, y = batch
            loss = F.mse_loss(self.net(x), y)
            # Ten values; building the dict is the user's cost and is the same
            # in every step, so it is part of what the variant measures.
            values = dict.fromkeys(DICT_KEYS, loss)
            values["loss"] = loss
            self.log_dict(values)
            return loss

    return {"bare": Bare, "log": Log, "log_epoch": LogEpoch, "log_dict": LogDict}


def run_raw(batch: Any, n: int) -> float:
    """``overhead.run_raw`` with the same per-step time stamp as the modules."""
    import time

    import torch.nn.functional as F

    model = overhead.make_mlp()
    model.train()
    optimizer = overhead.make_optimizer(model.parameters())
    stamp, stamps = time.perf_counter, STAMPS
    clock = overhead.clock
    start = clock()
    for x, y in overhead.Batches(batch, n):
        stamps.append(stamp())
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return clock() - start


def median_step_us(run: Callable[[int], float], n: int, skip: int = 10) -> float:
    """The median time between the starts of consecutive steps of one run
    (``--method stamps``): a step the scheduler interrupted is an outlier the
    median ignores, so this holds up on a busy machine."""
    STAMPS.clear()
    run(n)
    diffs = sorted(b - a for a, b in zip(STAMPS[skip:], STAMPS[skip + 1 :], strict=False))
    STAMPS.clear()
    return diffs[len(diffs) // 2] * 1e6


_CLASSES: dict[str, type] | None = None


def run_variant(name: str, batch: Any, n: int, root: str, log_every: int) -> float:

    global _CLASSES
    if _CLASSES is None:
        _CLASSES = module_classes()
    module = _CLASSES[name]()
    logger: Any = False
    if name != "bare":
        from ember.plugins.loggers import CSVLogger

        logger = CSVLogger(save_dir=tempfile.mkdtemp(dir=root))
    trainer = overhead.bench_trainer(root, logger=logger, log_every_n_steps=log_every)
    clock = overhead.clock
    start = clock()
    trainer.fit(module, overhead.Batches(batch, n))
    elapsed = clock() - start
    if trainer.global_step != n:
        raise RuntimeError(f"{name}: {trainer.global_step} steps, expected {n}")
    return elapsed


def measure(n: int, repeats: int, warmup: int, log_every: int, variants: tuple[str, ...] = VARIANTS, method: str = "n2n") -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = (torch.randn(overhead.BATCH, overhead.IN_FEATURES), torch.randn(overhead.BATCH, 1))
    rng = random.Random(0)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="ember-logbench-") as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs: dict[str, Callable[[int], float]] = {
            v: (lambda k: run_raw(batch, k)) if v == "raw" else (lambda k, v=v: run_variant(v, batch, k, root, log_every)) for v in variants
        }
        for _ in range(warmup):
            for run in runs.values():
                run(n // 4 or 1)
        for _ in range(repeats):
            order = list(variants)
            rng.shuffle(order)
            for v in order:
                samples[v].append(overhead.per_step_us(runs[v], n) if method == "n2n" else median_step_us(runs[v], n))
                STAMPS.clear()
    raw = samples["raw"]
    return {
        "method": method,
        "steps": n,
        "repeats": repeats,
        "log_every_n_steps": log_every,
        "us_per_step": {v: statistics.median(s) for v, s in samples.items()},
        "overhead_us": {v: statistics.median(a - b for a, b in zip(samples[v], raw, strict=True)) for v in variants if v != "raw"},
        "samples_us": samples,
    }


def measure_calls(number: int = 20000, repeat: int = 9) -> dict[str, float]:
    """Microseconds per call of what a ``training_step`` does, on a trainer's
    own ``Results`` (fold and epoch bookkeeping included, amortized): the
    minimum over ``repeat`` rounds, which is robust to other processes."""
    import timeit

    import torch

    from ember.results import Results

    torch.set_num_threads(1)
    Bare, _ = overhead.ember_module_classes_cached()
    module = Bare()
    weight = torch.randn(overhead.BATCH, overhead.IN_FEATURES, requires_grad=True)
    loss = (weight * 2).mean()  # a loss with a graph, as in a training_step
    values = dict.fromkeys(DICT_KEYS, loss)
    values["loss"] = loss

    def fresh() -> None:
        results = Results(default_on_step=True, default_on_epoch=False)
        results.new_batch((torch.zeros(overhead.BATCH, overhead.IN_FEATURES),))
        object.__setattr__(module, "_results", results)

    calls = {
        "log": lambda: module.log("loss", loss),
        "log_epoch": lambda: module.log("loss", loss, on_step=True, on_epoch=True),
        "log_dict": lambda: module.log_dict(values),
    }
    out = {}
    for name, call in calls.items():
        times = []
        for _ in range(repeat):
            fresh()
            times.append(timeit.timeit(call, number=number, timer=overhead.clock) / number * 1e6)
        out[name] = min(times)
    return out


def report(result: dict[str, Any]) -> str:
    lines = [f"{'variant':<12}{'us/step':>10}{'vs raw':>10}{'target':>10}"]
    for v, t in result["us_per_step"].items():
        if v == "raw":
            lines.append(f"{v:<12}{t:>10.1f}")
            continue
        over = result["overhead_us"][v]
        target = TARGETS.get(v)
        mark = "" if target is None else f"<= {target:g} {'ok' if over <= target else 'MISSED'}"
        lines.append(f"{v:<12}{t:>10.1f}{over:>+10.1f}  {mark}")
    lines.append(
        f"({result['steps']} vs {2 * result['steps']} steps"
        if result["method"] == "n2n"
        else f"(median step of {result['steps']}-step runs"
    )
    lines[-1] += (
        f", median of {result['repeats']} interleaved repetitions, "
        f"{result['clock']} time, CSV logger, log_every_n_steps={result['log_every_n_steps']}; {result['machine']})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-step cost of self.log / self.log_dict against raw PyTorch.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50, help="the trainer's log_every_n_steps")
    parser.add_argument("--only", default="", help="comma-separated variants (raw always runs)")
    parser.add_argument("--clock", choices=sorted(overhead.CLOCKS), default="cpu")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 when an overhead misses its target")
    parser.add_argument("--calls", action="store_true", help="only time the calls themselves (us per call, no training)")
    parser.add_argument(
        "--method",
        choices=("n2n", "stamps"),
        default="n2n",
        help="n2n: (t(2N) - t(N)) / N as overhead.py (default); stamps: median time between consecutive step starts (robust on a busy machine)",
    )
    args = parser.parse_args(argv)
    overhead.clock = overhead.CLOCKS[args.clock]
    if args.calls:
        calls = measure_calls()
        print("  ".join(f"{k} {v:.2f} us/call" for k, v in calls.items()))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(calls, fh, indent=2)
        return 0

    import torch

    variants = tuple(v for v in VARIANTS if not args.only or v == "raw" or v in args.only.split(","))
    result = measure(args.steps, args.repeats, args.warmup, args.log_every, variants, args.method)
    result["clock"] = args.clock if args.method == "n2n" else "wall"
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, torch {torch.__version__}"
    print(report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    missed = [v for v, over in result["overhead_us"].items() if v in TARGETS and over > TARGETS[v]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
