"""A small transformer with a custom ``optimizer_step`` and a warm-up scheduler.

The learning rate warms up linearly per step (``LambdaLR``, interval
``"step"``) and then decays as 1/sqrt(step); ``optimizer_step`` is overridden
to skip the update on a non-finite loss (and record the step's rate), with
gradient accumulation and clipping around it. A LearningRateMonitor logs the
rate at Lightning's steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from frameworks import recording_logger, trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: Several seconds on a loaded CPU: run in the slow tier (python -m pytest -m slow tests/compat).
SLOW = True

VOCAB, LENGTH, WARMUP = 20, 8, 4


def data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    return TensorDataset(tokens, (tokens[:, 0] < tokens[:, -1]).long())


def schedule(step: int) -> float:
    step += 1
    return step / WARMUP if step <= WARMUP else math.sqrt(WARMUP / step)


def build(fw: Any) -> Any:
    class TinyTransformer(fw.LightningModule):
        def __init__(self, d_model: int = 16, lr: float = 3e-3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.embed = nn.Embedding(VOCAB, d_model)
            self.position = nn.Parameter(torch.randn(1, LENGTH, d_model) * 0.02)
            layer = nn.TransformerEncoderLayer(d_model, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.head = nn.Linear(d_model, 2)
            self.step_lrs: list[float] = []

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.embed(tokens) + self.position).mean(1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            tokens, y = batch
            loss = nn.functional.cross_entropy(self(tokens), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            loss = optimizer.step(closure=optimizer_closure)
            self.step_lrs.append(optimizer.param_groups[0]["lr"])
            if loss is not None and not torch.isfinite(loss):
                raise RuntimeError("non-finite loss")

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            tokens, y = batch
            logits = self(tokens)
            self.log("val_loss", nn.functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            tokens, y = batch
            self.log("test_acc", (self(tokens).argmax(1) == y).float().mean())

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0]).argmax(1)

        def configure_optimizers(self) -> Any:
            decay = [p for n, p in self.named_parameters() if p.ndim > 1]
            no_decay = [p for n, p in self.named_parameters() if p.ndim <= 1]
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr
            )
            warmup = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
            return [opt], [{"scheduler": warmup, "interval": "step", "name": "warmup"}]

    return TinyTransformer


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(5)
    model = build(fw)()
    train = DataLoader(data(0, 64), batch_size=8, shuffle=True)
    val = DataLoader(data(1, 16), batch_size=8)
    logger = recording_logger(fw)
    monitor = fw.callbacks.LearningRateMonitor(logging_interval="step")
    t = trainer(
        fw,
        max_epochs=2,
        accumulate_grad_batches=2,
        gradient_clip_val=1.0,
        logger=logger,
        log_every_n_steps=2,
        callbacks=[monitor],
        default_root_dir=root,
    )
    t.fit(model, train, val)
    return {
        "weights": weights(model),
        "global_step": t.global_step,
        "step_lrs": model.step_lrs,
        "lr_monitor": [
            (step, {k: v for k, v in m.items() if k.startswith("warmup")})
            for step, m in logger.calls
            if any(k.startswith("warmup") for k in m)
        ],
        "monitor_lrs": monitor.lrs,
        "validate": t.validate(model, val, verbose=False),
        "test": t.test(model, val, verbose=False),
        "predict": t.predict(model, DataLoader(data(2, 8), batch_size=4)),
    }
