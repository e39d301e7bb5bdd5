"""A GAN: two optimizers, manual optimization, ``toggle_optimizer``.

The generator maps noise to 2-d points, the discriminator tells them from
points on a ring. Each batch steps the discriminator, then the generator,
each with only its own parameters requiring gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LATENT = 4


def ring(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=g) * 2 * torch.pi
    return torch.stack([angle.cos(), angle.sin()], 1) + 0.05 * torch.randn(n, 2, generator=g)


def build(fw: Any) -> Any:
    class GAN(fw.LightningModule):
        def __init__(self, lr: float = 2e-3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.automatic_optimization = False
            self.generator = nn.Sequential(nn.Linear(LATENT, 16), nn.LeakyReLU(0.2), nn.Linear(16, 2))
            self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Dropout(0.1), nn.Linear(16, 1))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.generator(z)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            (real,) = batch
            opt_g, opt_d = self.optimizers()
            z = torch.randn(real.shape[0], LATENT, device=self.device)
            bce = nn.functional.binary_cross_entropy_with_logits

            self.toggle_optimizer(opt_d)
            fake = self(z).detach()
            d_loss = bce(self.discriminator(real), torch.ones(len(real), 1)) + bce(self.discriminator(fake), torch.zeros(len(real), 1))
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
            self.untoggle_optimizer(opt_d)

            self.toggle_optimizer(opt_g)
            g_loss = bce(self.discriminator(self(z)), torch.ones(len(real), 1))
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            self.clip_gradients(opt_g, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True)

        def on_train_epoch_end(self) -> None:
            sched_g, sched_d = self.lr_schedulers()
            sched_g.step()
            sched_d.step()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            (real,) = batch
            z = torch.randn(real.shape[0], LATENT)
            self.log("val_realness", torch.sigmoid(self.discriminator(self(z))).mean())

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0])

        def configure_optimizers(self) -> Any:
            opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999))
            opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999))
            sched = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.9) for o in (opt_g, opt_d)]
            return [opt_g, opt_d], sched

    return GAN


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(3)
    model = build(fw)()
    train = DataLoader(TensorDataset(ring(96, 0)), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(ring(32, 1)), batch_size=16)
    t = trainer(fw, max_epochs=2, default_root_dir=root)
    t.fit(model, train, val)
    noise = DataLoader(TensorDataset(torch.randn(8, LATENT, generator=torch.Generator().manual_seed(5))), batch_size=4)
    requires_grad = [p.requires_grad for p in model.parameters()]
    return {
        "weights": weights(model),
        "global_step": t.global_step,
        "requires_grad_after": requires_grad,
        "validate": t.validate(model, val, verbose=False),
        "predict": t.predict(model, noise),
    }
