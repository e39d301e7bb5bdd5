"""A small training job for the real-XLA tests, run as a subprocess so that
each run gets a fresh XLA runtime with its own ``PJRT_DEVICE`` /
``CPU_NUM_DEVICES``.

    python xla_job.py OUT_DIR --accelerator xla --strategy xla [--devices N]
        [--batch-size B] [--precision P] [--checkpoint]

Writes ``OUT_DIR/result.pt``: the final weights (CPU), the logged metrics,
``global_step``, and what the job observed about its strategy.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import ember


def regression_data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class Regressor(ember.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.seen_devices: set[str] = set()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.seen_devices.add(x.device.type)
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def on_train_end(self) -> None:
        strategy = self.trainer.strategy
        gathered = strategy.all_gather(torch.tensor([float(strategy.global_rank)]))
        summed = strategy.reduce(torch.tensor(1.0), "sum")
        picked = strategy.broadcast({"from": strategy.global_rank}, src=0)
        strategy.barrier("job-end")
        if strategy.is_global_zero:
            torch.save(
                {
                    "world_size": strategy.world_size,
                    "root_device": str(strategy.root_device),
                    "seen_devices": sorted(self.seen_devices),
                    "gathered": gathered.cpu(),
                    "summed": summed.cpu(),
                    "broadcast": picked,
                },
                os.path.join(self.out_dir, "observed.pt"),
            )

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--accelerator", default="xla")
    parser.add_argument("--strategy", default="xla")
    parser.add_argument("--devices", default="1")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint", action="store_true")
    args = parser.parse_args(argv)

    devices: Any = args.devices if args.devices == "auto" else int(args.devices)
    model = Regressor()
    model.out_dir = args.out_dir
    data = regression_data()
    train = DataLoader(data, batch_size=args.batch_size, shuffle=False)
    val = DataLoader(data, batch_size=args.batch_size)
    trainer = ember.Trainer(
        accelerator=args.accelerator,
        strategy=args.strategy,
        devices=devices,
        precision=args.precision,
        max_epochs=args.epochs,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=args.out_dir,
    )
    trainer.fit(model, train, val)
    if args.checkpoint:
        trainer.save_checkpoint(os.path.join(args.out_dir, "final.ckpt"))
    torch.save(
        {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "global_step": trainer.global_step,
            "accelerator": type(trainer.strategy.accelerator).__name__,
            "strategy": trainer.strategy.name,
        },
        os.path.join(args.out_dir, "result.pt"),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
