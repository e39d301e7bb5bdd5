"""``seed_everything`` and ``isolated_rng``."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytest
import torch

import ember
from ember.seed import isolated_rng


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBER_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("EMBER_SEED_WORKERS", raising=False)


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_seed_everything_seeds_python_numpy_and_torch() -> None:
    assert ember.seed_everything(123) == 123
    first = _draw()
    ember.seed_everything(123)
    assert _draw() == first
    ember.seed_everything(124)
    assert _draw() != first
    assert os.environ["EMBER_GLOBAL_SEED"] == "124" and os.environ["EMBER_SEED_WORKERS"] == "0"
    ember.seed_everything(5, workers=True)
    assert os.environ["EMBER_SEED_WORKERS"] == "1"


def test_seed_none_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_GLOBAL_SEED", "77")
    assert ember.seed_everything() == 77
    monkeypatch.delenv("EMBER_GLOBAL_SEED")
    assert ember.seed_everything() == 0


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_out_of_range(seed: int) -> None:
    with pytest.raises(ValueError, match="seed must be in"):
        ember.seed_everything(seed)


def test_isolated_rng_restores_every_generator() -> None:
    ember.seed_everything(1)
    with isolated_rng():
        _draw()
        _draw()
    after = _draw()
    ember.seed_everything(1)
    assert _draw() == after


def test_two_seeded_fits_are_identical_and_the_sanity_check_changes_nothing(h: Any, make_trainer: Any) -> None:
    class Noisy(h.Regressor):  # type: ignore[misc, name-defined]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(torch.nn.functional.dropout(x, 0.5, self.training))

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            torch.rand(100)  # validation that consumes randomness
            super().validation_step(batch, batch_idx)

    def run(sanity: int) -> list[torch.Tensor]:
        model = Noisy()
        ember.seed_everything(42)
        make_trainer(max_epochs=2, num_sanity_val_steps=sanity).fit(model, h.loader(32, 8, shuffle=True), h.loader(16, 8))
        return h.params_of(model)

    reference = run(0)
    assert h.same(run(0), reference)
    assert h.same(run(2), reference)
