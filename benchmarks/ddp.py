#!/usr/bin/env python
"""2-process CPU step time: ember strategy='ddp' vs a hand-written DDP loop (run under torchrun).

Usage: torchrun --standalone --nproc_per_node=2 benchmarks/ddp.py ROUNDS
"""

import os
import sys
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

STEPS, WARMUP, BATCH = 500, 50, 64


def make_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * BATCH * 2, 32, generator=g)
    return TensorDataset(x, torch.randint(0, 10, (len(x),), generator=g))


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


def raw():
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ds = make_data()
    loader = DataLoader(ds, batch_size=BATCH, sampler=DistributedSampler(ds, shuffle=False))
    for i, (x, y) in enumerate(loader):
        if i == WARMUP:
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def ember_run():
    import ember

    class M(ember.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, i):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(ember.Callback):
        def on_train_batch_start(self, trainer, module, batch, i):
            if i == WARMUP:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.elapsed = time.perf_counter() - self.t0

    torch.manual_seed(0)
    clock = Clock()
    tr = ember.Trainer(
        strategy="ddp",
        devices=2,
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=[clock],
    )
    tr.fit(M(), DataLoader(make_data(), batch_size=BATCH))
    assert tr.global_step == STEPS, tr.global_step
    return clock.elapsed


if __name__ == "__main__":
    import statistics

    dist.init_process_group("gloo")
    rounds = int(sys.argv[1])
    times = {"raw": [], "ember": []}
    for r in range(rounds):
        order = ("raw", "ember") if r % 2 == 0 else ("ember", "raw")
        for name in order:
            dist.barrier()
            times[name].append((raw() if name == "raw" else ember_run()) / (STEPS - WARMUP) * 1e3)
    if os.environ["RANK"] == "0":
        for name, ts in times.items():
            print(
                f"RESULT {name}: median {statistics.median(ts):.3f} ms/step, min {min(ts):.3f}, all {[round(t, 3) for t in ts]}", flush=True
            )
        print(
            f"RESULT ember/raw median {statistics.median(times['ember']) / statistics.median(times['raw']):.3f}, min {min(times['ember']) / min(times['raw']):.3f}"
        )
