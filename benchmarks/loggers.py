#!/usr/bin/env python
"""What each logger costs per training step.

The workload is the one of ``benchmarks/overhead.py``: a tiny MLP trained on
one in-memory batch, so a step takes tens of microseconds and the logger's
share is visible. The module calls ``self.log("loss", loss)`` and
``self.log("acc", ...)`` every step and the trainer runs with
``log_every_n_steps=1``, so every step is a log call: the worst case (the
default ``log_every_n_steps=50`` divides these costs by 50).

Variants, run interleaved in a shuffled order for several repetitions:

* ``no logger``: ``logger=False`` (``self.log`` still records the values);
* ``csv``: ``CSVLogger`` (default buffering, 100 rows);
* ``tensorboard``: ``TensorBoardLogger``;
* ``wandb``: ``WandbLogger(offline=True)``;
* ``mlflow``: ``MLflowLogger`` on a local SQLite store (default buffering:
  100 calls or 5 s), and ``mlflow-unbuffered`` with
  ``flush_logs_every_n_steps=1`` (one ``log_batch`` per step).

Each variant is timed for N and 2N steps; ``(t(2N) - t(N)) / N`` is its cost
per step, with run set-up and teardown (``wandb.init``, creating the MLflow
run, ...) cancelled out. Figures are medians over repetitions; a logger's
cost is the median of (variant - ``no logger``) in the same repetition.

The clock is wall time by default: W&B writes from a separate process
(``wandb-core``) and TensorBoard from a thread, which CPU time of this
process would miss or blur. ``--clock cpu`` uses ``time.process_time``.

Usage::

    python benchmarks/loggers.py [--steps N] [--repeats R] [--only csv,tensorboard] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_CONSOLE", "off")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

IN_FEATURES, HIDDEN, BATCH = 32, 64, 64
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.perf_counter

VARIANTS = ("no logger", "csv", "tensorboard", "wandb", "mlflow", "mlflow-unbuffered")
NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "mlflow-unbuffered": "mlflow"}


class Batches:
    def __init__(self, batch: Any, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch


def module_class() -> type:
    import torch
    import torch.nn.functional as F
    from torch import nn

    import ember

    class Logged(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            out = self.net(x)
            loss = F.mse_loss(out, y)
            self.log("loss", loss)
            self.log("acc", (out.sign() == y.sign()).float().mean())
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    return Logged


def make_logger(variant: str, root: str) -> Any:
    if variant == "no logger":
        return False
    if variant == "csv":
        from ember.plugins.loggers import CSVLogger

        return CSVLogger(save_dir=root)
    if variant == "tensorboard":
        from ember.plugins.loggers.tensorboard import TensorBoardLogger

        return TensorBoardLogger(save_dir=root)
    if variant == "wandb":
        from ember.plugins.loggers.wandb import WandbLogger

        return WandbLogger(save_dir=root, offline=True, project="bench")
    from ember.plugins.loggers.mlflow import MLflowLogger

    # one database per process: creating one runs MLflow's migrations
    every = 1 if variant == "mlflow-unbuffered" else 100
    return MLflowLogger(save_dir=os.path.dirname(root), flush_logs_every_n_steps=every)


def run(variant: str, batch: Any, n: int, base: str) -> float:
    import ember

    root = tempfile.mkdtemp(dir=base)
    trainer = ember.Trainer(
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        logger=make_logger(variant, root),
        log_every_n_steps=1,
    )
    module = MODULE()
    gc.collect()
    start = clock()
    trainer.fit(module, Batches(batch, n))
    return clock() - start


MODULE: Any = None


def main(argv: list[str] | None = None) -> int:
    global clock, MODULE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--only", default="", help="comma-separated variants (no logger is always run)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    clock = CLOCKS[args.clock]

    import torch

    torch.set_num_threads(1)
    MODULE = module_class()
    batch = (torch.randn(BATCH, IN_FEATURES), torch.randn(BATCH, 1))
    wanted = [v for v in VARIANTS if not args.only or v == "no logger" or v in args.only.split(",")]
    variants = [v for v in wanted if v not in NEEDS or importlib.util.find_spec(NEEDS[v]) is not None]
    skipped = sorted(set(wanted) - set(variants))
    per_step: dict[str, list[float]] = {v: [] for v in variants}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="ember-loggers-") as base:
        for v in variants:  # warm-up: imports, first wandb.init, MLflow schema
            run(v, batch, 20, base)
        for _ in range(args.repeats):
            order = variants[:]
            rng.shuffle(order)
            for v in order:
                t1 = run(v, batch, args.steps, base)
                t2 = run(v, batch, 2 * args.steps, base)
                per_step[v].append((t2 - t1) / args.steps * 1e6)
    bare = per_step["no logger"]
    results = {
        v: {
            "us_per_step": statistics.median(per_step[v]),
            "logger_cost_us": 0.0 if v == "no logger" else statistics.median([a - b for a, b in zip(per_step[v], bare, strict=True)]),
        }
        for v in variants
    }
    print(f"per-step cost, {args.steps}/{2 * args.steps} steps, {args.repeats} repeats, {args.clock} clock, log_every_n_steps=1")
    print(f"{'variant':<20}{'us/step':>10}{'logger us/step':>16}")
    for v, r in results.items():
        print(f"{v:<20}{r['us_per_step']:>10.1f}{r['logger_cost_us']:>16.1f}")
    if skipped:
        print(f"skipped (package not installed): {', '.join(skipped)}")
    if args.json:
        meta = {"python": sys.version.split()[0], "torch": torch.__version__, "machine": platform.machine(), "clock": args.clock}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results, "raw": per_step}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
