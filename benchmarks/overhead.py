#!/usr/bin/env python
"""How much time ember adds per training step, and to start-up.

Per-step overhead
    A tiny MLP is trained on one batch of random tensors that is already in
    memory, so the step itself is a few tens of microseconds and whatever the
    trainer adds is visible. Three variants run in the same process, with the
    same model, data and optimizer:

    * ``raw``: a plain loop (forward, loss, ``backward``, ``optimizer.step``,
      ``optimizer.zero_grad``);
    * ``ember bare``: ``Trainer(enable_progress_bar=False,
      enable_model_summary=False, enable_checkpointing=False, logger=False,
      num_sanity_val_steps=0)``;
    * ``ember logging``: the module also calls ``self.log("loss", loss)``
      every step and the CSV logger writes with ``log_every_n_steps=1``.

    Each variant is timed for N and 2N steps; ``(t(2N) - t(N)) / N`` is its
    cost per step with everything that happens once per run (trainer
    construction, plugin loading, set-up, teardown) cancelled out. The
    variants run interleaved, in a shuffled order, for several repetitions;
    the figures are medians, and the overhead of an ember variant is the
    median over repetitions of (ember - raw) measured in the same repetition.

Clock
    By default every time is the process's CPU time (``time.process_time``),
    which does not count the time the process waits while others use the
    cores; on a busy machine that is far steadier than elapsed time. torch
    runs on one thread (``torch.set_num_threads(1)``), so CPU time is the time
    of the work itself. ``--clock wall`` times elapsed time instead.

Import time
    ``import ember`` and ``import ember; ember.Trainer`` after ``import torch``,
    each in a fresh interpreter, median of several.

Usage::

    python benchmarks/overhead.py [--steps N] [--repeats R] [--json results.json] [--check]

``--check`` exits with status 1 when a figure misses its target (bare <= 10
us/step, logging <= 30 us/step, import <= 0.1 s beyond torch).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

#: The clock every run is timed with; see --clock.
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time

TARGETS = {"ember_bare_overhead_us": 10.0, "ember_logging_overhead_us": 30.0, "import_trainer_s": 0.1}

IN_FEATURES, HIDDEN, BATCH = 32, 64, 64


# --------------------------------------------------------------------------- workload


class Batches:
    """The same in-memory batch ``n`` times: a dataloader with no data-loading cost."""

    def __init__(self, batch: tuple[Any, Any], n: int) -> None:
        self.batch = batch
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        batch = self.batch
        for _ in range(self.n):
            yield batch


def make_mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))


def make_optimizer(params):
    import torch

    return torch.optim.SGD(params, lr=1e-3)


def run_raw(batch, n: int) -> float:
    import torch.nn.functional as F

    model = make_mlp()
    model.train()
    optimizer = make_optimizer(model.parameters())
    loader = Batches(batch, n)
    start = clock()
    for x, y in loader:
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return clock() - start


def ember_module_classes():
    import torch.nn.functional as F

    import ember

    class Bare(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return make_optimizer(self.parameters())

    class Logging(Bare):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self.net(x), y)
            self.log("loss", loss)
            return loss

    return Bare, Logging


def bench_trainer(root: str, **kwargs: Any) -> Any:
    """The ``ember.Trainer`` every benchmark times: one epoch, nothing printed,
    no checkpointing, sanity check or logger unless given in ``kwargs``, on the
    CPU as the raw loop is (also on a machine with a GPU). The default
    ``FaultTolerance`` callback stays: it is part of what "bare" measures."""
    import ember

    options: dict[str, Any] = dict(
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        logger=False,
        default_root_dir=root,
        accelerator="cpu",
    )
    options.update(kwargs)
    return ember.Trainer(**options)


def run_ember(batch, n: int, *, logging: bool, root: str) -> float:
    Bare, Logging = ember_module_classes_cached()
    module = Logging() if logging else Bare()
    if logging:
        # the CSV logger by name: logger=True picks TensorBoard where it is installed
        from ember.loggers import CSVLogger

        trainer = bench_trainer(root, logger=CSVLogger(root), log_every_n_steps=1)
    else:
        trainer = bench_trainer(root)
    start = clock()
    trainer.fit(module, Batches(batch, n))
    elapsed = clock() - start
    if trainer.global_step != n:
        raise RuntimeError(f"ember took {trainer.global_step} optimizer steps, expected {n}")
    return elapsed


_CLASSES: tuple[type, type] | None = None


def ember_module_classes_cached():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = ember_module_classes()
    return _CLASSES


# --------------------------------------------------------------------------- measurement


def per_step_us(run: Callable[[int], float], n: int) -> float:
    gc.collect()
    t1 = run(n)
    gc.collect()
    t2 = run(2 * n)
    return (t2 - t1) / n * 1e6


def measure_steps(n: int, repeats: int, warmup: int, seed: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = (torch.randn(BATCH, IN_FEATURES), torch.randn(BATCH, 1))
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as root:
        variants: dict[str, Callable[[int], float]] = {
            "raw": lambda k: run_raw(batch, k),
            "ember_bare": lambda k: run_ember(batch, k, logging=False, root=root),
            "ember_logging": lambda k: run_ember(batch, k, logging=True, root=root),
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
                    samples[name].append(per_step_us(variants[name], n))
    med = {name: statistics.median(v) for name, v in samples.items()}
    result: dict[str, Any] = {
        "steps": n,
        "repeats": repeats,
        "raw_us": med["raw"],
        "ember_bare_us": med["ember_bare"],
        "ember_logging_us": med["ember_logging"],
        "ember_bare_overhead_us": statistics.median(e - r for e, r in zip(samples["ember_bare"], samples["raw"], strict=True)),
        "ember_logging_overhead_us": statistics.median(e - r for e, r in zip(samples["ember_logging"], samples["raw"], strict=True)),
        "samples_us": samples,
    }
    return result


_IMPORT_SNIPPET = """
import time
clock = time.{clock}
import torch
t0 = clock()
import ember
t1 = clock()
ember.Trainer
t2 = clock()
print(t1 - t0, t2 - t0)
"""


def measure_import(repeats: int) -> dict[str, Any]:
    env = dict(os.environ)
    ember_only, with_trainer = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT_SNIPPET.format(clock=clock.__name__)], check=True, capture_output=True, text=True, env=env
        ).stdout.split()
        ember_only.append(float(out[0]))
        with_trainer.append(float(out[1]))
    return {
        "import_ember_s": statistics.median(ember_only),
        "import_trainer_s": statistics.median(with_trainer),
        "import_repeats": repeats,
    }


# --------------------------------------------------------------------------- report


def verdict(key: str, value: float) -> str:
    return "ok" if value <= TARGETS[key] else "MISSED"


def report(result: dict[str, Any]) -> str:
    rows = [
        ("raw PyTorch loop", f"{result['raw_us']:8.1f} us/step", "", ""),
        (
            "ember, bare",
            f"{result['ember_bare_us']:8.1f} us/step",
            f"{result['ember_bare_overhead_us']:+8.1f} us/step",
            f"<= {TARGETS['ember_bare_overhead_us']:g} us  {verdict('ember_bare_overhead_us', result['ember_bare_overhead_us'])}",
        ),
        (
            "ember, self.log + CSV every step",
            f"{result['ember_logging_us']:8.1f} us/step",
            f"{result['ember_logging_overhead_us']:+8.1f} us/step",
            f"<= {TARGETS['ember_logging_overhead_us']:g} us  {verdict('ember_logging_overhead_us', result['ember_logging_overhead_us'])}",
        ),
        ("import ember (after torch)", f"{result['import_ember_s']:8.3f} s", "", ""),
        (
            "import ember + ember.Trainer",
            f"{result['import_trainer_s']:8.3f} s",
            "",
            f"<= {TARGETS['import_trainer_s']:g} s   {verdict('import_trainer_s', result['import_trainer_s'])}",
        ),
    ]
    header = ("", "time", "overhead vs raw", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(header), line(tuple("-" * w for w in widths)), *map(line, rows)]
    out.append(
        f"({result['steps']} vs {2 * result['steps']} steps, median of {result['repeats']} interleaved repetitions, {result['clock']} time; "
        f"MLP {IN_FEATURES}-{HIDDEN}-1, batch {BATCH}, SGD, 1 torch thread; {result['machine']})"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ember's per-step and import overhead against raw PyTorch.")
    parser.add_argument("--steps", type=int, default=300, help="N: each variant is timed for N and 2N steps")
    parser.add_argument("--repeats", type=int, default=31, help="interleaved repetitions (median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds")
    parser.add_argument("--import-repeats", type=int, default=7, help="fresh interpreters for the import time")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled run order")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: the process's CPU time (default; robust when other processes compete for the cores), wall: elapsed time",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure misses its target")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]

    import torch

    import ember

    result = measure_steps(args.steps, args.repeats, args.warmup, args.seed)
    result.update(measure_import(args.import_repeats))
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"
    result["ember_version"] = ember.__version__
    result["clock"] = args.clock
    result["targets"] = TARGETS
    result["met"] = {key: result[key] <= limit for key, limit in TARGETS.items()}
    print(report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    if args.check and not all(result["met"].values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
