"""Deep Q-learning over an ``IterableDataset`` without ``__len__``.

Each training step plays one move of a small deterministic chain
environment (epsilon-greedy, drawing from the global random state) into a
replay buffer; the dataset samples transitions from that buffer while the
loop runs, so the order of batch fetching and stepping must match
Lightning's. A target network is synced every few steps.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import torch
from frameworks import trainer, weights
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

STATES, ACTIONS = 6, 2


class Chain:
    """Move left/right on a chain; reward at the right end."""

    def __init__(self) -> None:
        self.position = 0

    def observe(self) -> torch.Tensor:
        return nn.functional.one_hot(torch.tensor(self.position), STATES).float()

    def step(self, action: int) -> tuple[float, bool]:
        self.position = max(0, min(STATES - 1, self.position + (1 if action == 1 else -1)))
        done = self.position == STATES - 1
        reward = 1.0 if done else -0.05
        if done:
            self.position = 0
        return reward, done


class Replay(IterableDataset):
    """Samples from a buffer that grows while training; no ``__len__``."""

    def __init__(self, buffer: deque, samples_per_epoch: int) -> None:
        self.buffer = buffer
        self.samples_per_epoch = samples_per_epoch

    def __iter__(self) -> Any:
        for _ in range(self.samples_per_epoch):
            index = int(torch.randint(len(self.buffer), (1,)))
            yield self.buffer[index]


def build(fw: Any) -> Any:
    class DQN(fw.LightningModule):
        def __init__(self, gamma: float = 0.9, sync_every: int = 5) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(STATES, 16), nn.ReLU(), nn.Linear(16, ACTIONS))
            self.target = copy.deepcopy(self.net)
            self.env = Chain()
            self.buffer: deque = deque(maxlen=200)
            self.state = self.env.observe()
            self.rewards: list[float] = []
            for _ in range(16):
                self.play(epsilon=1.0)

        def forward(self, states: torch.Tensor) -> torch.Tensor:
            return self.net(states)

        @torch.no_grad()
        def play(self, epsilon: float) -> None:
            if float(torch.rand(())) < epsilon:
                action = int(torch.randint(ACTIONS, ()))
            else:
                action = int(self.net(self.state).argmax())
            reward, done = self.env.step(action)
            nxt = self.env.observe()
            self.buffer.append((self.state, torch.tensor(action), torch.tensor(reward), torch.tensor(done), nxt))
            self.state = nxt
            self.rewards.append(reward)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            epsilon = max(0.1, 1.0 - self.global_step / 20)
            self.play(epsilon)
            states, actions, rewards, dones, nexts = batch
            q = self.net(states).gather(1, actions[:, None]).squeeze(1)
            with torch.no_grad():
                target = rewards + self.hparams.gamma * self.target(nexts).max(1).values * (~dones).float()
            loss = nn.functional.smooth_l1_loss(q, target)
            if self.global_step % self.hparams.sync_every == 0:
                self.target.load_state_dict(self.net.state_dict())
            self.log_dict({"loss": loss, "epsilon": epsilon, "buffer": float(len(self.buffer))})
            return loss

        def train_dataloader(self) -> DataLoader:
            return DataLoader(Replay(self.buffer, samples_per_epoch=48), batch_size=8)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.net.parameters(), lr=1e-2)

    return DQN


def run(fw: Any, root: Any) -> dict[str, Any]:
    fw.seed_everything(13)
    model = build(fw)()
    t = trainer(fw, max_epochs=3, default_root_dir=root)
    t.fit(model)
    states = nn.functional.one_hot(torch.arange(STATES), STATES).float()
    return {
        "weights": weights(model),
        "global_step": t.global_step,
        "rewards": model.rewards,
        "predict": t.predict(model, DataLoader(states, batch_size=3)),
    }
