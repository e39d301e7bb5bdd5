#!/usr/bin/env python
"""Compile modes and device prefetching on a GPU, through ember.

Workloads (the data sits in host memory and every batch is copied to the
GPU, as with a real loader):

* ``mlp``: the 32-64-1 MLP of ``benchmarks/overhead.py``, batch 64: a
  launch-bound step (tiny kernels; CUDA graphs should help most);
* ``digits``: the CNN of ``examples/digits``, batch 256 of 1x8x8;
* ``conv64``: a small conv net on 3x64x64 images, batch 256 (12.6 MB per
  batch): a copy-heavy step, where prefetching should matter.

Variants: ``torch.compile`` mode (``eager``, ``default``,
``reduce-overhead`` (CUDA graphs), ``max-autotune-no-cudagraphs``) x
prefetch (``trainer.device_prefetch = False`` / ``1``; the loader is a
``DataLoader`` with ``pin_memory=False`` so that pinning is the
prefetcher's). Each variant trains one module: warm-up steps first
(compiling happens there; reported as "first steps"), then the time per
step is ``(t(2N) - t(N)) / N`` with ``torch.cuda.synchronize()`` before each
clock read, median of interleaved repetitions. A plain PyTorch loop (eager,
synchronous copies) is the reference row.

Usage::

    python benchmarks/gpu_pipeline.py [--workloads mlp,digits,conv64] [--modes eager,default,reduce-overhead] [--steps N] [--repeats R] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples", "digits"))

MODES = ("eager", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


def workload(name: str) -> tuple[Callable[[], Any], Any, Any]:
    """(model factory, dataset, loss)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    g = torch.Generator().manual_seed(0)
    if name == "mlp":
        import overhead

        data = torch.utils.data.TensorDataset(torch.randn(64 * 64, overhead.IN_FEATURES, generator=g), torch.randn(64 * 64, 1, generator=g))
        return overhead.make_mlp, (data, 64), F.mse_loss
    if name == "digits":
        from model import DigitsCNN

        def make() -> Any:
            net = DigitsCNN()
            return nn.Sequential(net.features, net.classifier)

        data = torch.utils.data.TensorDataset(torch.randn(256 * 32, 1, 8, 8, generator=g), torch.randint(0, 10, (256 * 32,), generator=g))
        return make, (data, 256), F.cross_entropy

    def conv() -> Any:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )  # fmt: skip

    data = torch.utils.data.TensorDataset(torch.randn(256 * 16, 3, 64, 64, generator=g), torch.randint(0, 10, (256 * 16,), generator=g))
    return conv, (data, 256), F.cross_entropy


class Cycle:
    """``n`` batches from a DataLoader over ``data``, cycling (a real loader, host memory)."""

    def __init__(self, data: Any, batch_size: int, n: int) -> None:
        import torch

        self.loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=True)
        self.n = n
        self.num_workers = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        left = self.n
        while left > 0:
            for batch in self.loader:
                yield batch
                left -= 1
                if left == 0:
                    return


def ember_runner(make: Any, data: Any, loss_fn: Any, mode: str, prefetch: Any, root: str) -> Callable[[int], float]:
    import torch

    import ember

    class Wrapped(ember.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make()

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return loss_fn(self(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    module = Wrapped()
    target = module if mode == "eager" else torch.compile(module, mode=None if mode == "default" else mode)
    dataset, batch_size = data

    def run(n: int) -> float:
        trainer = ember.Trainer(
            max_epochs=1, accelerator="cuda", devices=1, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, num_sanity_val_steps=0, logger=False, default_root_dir=root,
        )  # fmt: skip
        trainer.device_prefetch = prefetch
        torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.fit(target, Cycle(dataset, batch_size, n))
        torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def raw_runner(make: Any, data: Any, loss_fn: Any) -> Callable[[int], float]:
    import torch

    device = torch.device("cuda")
    model = make().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dataset, batch_size = data

    def run(n: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for x, y in Cycle(dataset, batch_size, n):
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def per_step_us(run: Callable[[int], float], n: int) -> float:
    t1 = run(n)
    t2 = run(2 * n)
    return (t2 - t1) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="mlp,digits,conv64")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu_pipeline.py needs a CUDA device.")
        return 2
    warnings.simplefilter("ignore")
    torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ember-gpu-") as root:
        for name in args.workloads.split(","):
            make, data, loss_fn = workload(name)
            runs: dict[tuple[str, str], Callable[[int], float]] = {("raw loop", "-"): raw_runner(make, data, loss_fn)}
            first: dict[tuple[str, str], float] = {}
            for mode in args.modes.split(","):
                for prefetch in (False, 1):
                    runs[(mode, "on" if prefetch else "off")] = ember_runner(make, data, loss_fn, mode, prefetch, root)
            failed: dict[tuple[str, str], str] = {}
            for key, run in list(runs.items()):
                try:
                    first[key] = run(5)
                except Exception as exc:  # a mode this torch/GPU cannot do: report, go on
                    failed[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
                    traceback.print_exc(limit=2)
                    del runs[key]
            samples: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
            rng = random.Random(0)
            for _ in range(args.repeats):
                order = list(runs)
                rng.shuffle(order)
                for key in order:
                    samples[key].append(per_step_us(runs[key], args.steps))
            base = statistics.median(samples[("eager", "off")]) if ("eager", "off") in samples else None
            for key, s in samples.items():
                med = statistics.median(s)
                rows.append(
                    {
                        "workload": name,
                        "mode": key[0],
                        "prefetch": key[1],
                        "us_per_step": med,
                        "first_5_steps_s": first[key],
                        "speedup_vs_eager_off": (base / med) if base else None,
                    }  # fmt: skip
                )
            for key, why in failed.items():
                rows.append({"workload": name, "mode": key[0], "prefetch": key[1], "error": why})
    print(f"{'workload':<9}{'compile mode':<28}{'prefetch':<10}{'us/step':>10}{'vs eager/off':>14}{'first 5 steps':>15}")
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<9}{r['mode']:<28}{r['prefetch']:<10}  failed: {r['error']}")
            continue
        speed = f"{r['speedup_vs_eager_off']:.2f}x" if r["speedup_vs_eager_off"] else ""
        print(f"{r['workload']:<9}{r['mode']:<28}{r['prefetch']:<10}{r['us_per_step']:>10.1f}{speed:>14}{r['first_5_steps_s']:>13.2f} s")
    print(
        f"(median of {args.repeats} interleaved repetitions of {args.steps} vs {2 * args.steps} steps; "
        f"{torch.cuda.get_device_name()}, torch {torch.__version__})"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
