"""Seeding every random number generator a training run touches."""

from __future__ import annotations

import os
import random

import torch


def seed_everything(seed: int | None = None, workers: bool = False) -> int:
    """Seed Python's, NumPy's (if installed) and torch's generators (CPU and
    every CUDA device) and return the seed. ``None`` reads ``EMBER_GLOBAL_SEED``
    or falls back to 0. ``workers=True`` makes dataloader workers derive
    distinct, reproducible seeds (exported as ``EMBER_SEED_WORKERS``)."""
    if seed is None:
        seed = int(os.environ.get("EMBER_GLOBAL_SEED", 0))
    seed = int(seed)
    if not (0 <= seed <= 2**32 - 1):
        raise ValueError(f"seed must be in [0, 2**32 - 1], got {seed}.")
    os.environ["EMBER_GLOBAL_SEED"] = str(seed)
    os.environ["EMBER_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional
        pass
    else:
        np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too when present
    return seed


class isolated_rng:
    """Restore every generator ``seed_everything`` seeds when the block ends,
    so that the block (e.g. the sanity check) leaves training's randomness as
    it would have been without it."""

    def __enter__(self) -> None:
        self._python = random.getstate()
        self._torch = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        try:
            import numpy as np
        except ImportError:
            self._numpy = None
        else:
            self._numpy = np.random.get_state()

    def __exit__(self, *exc: object) -> None:
        random.setstate(self._python)
        torch.set_rng_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        if self._numpy is not None:
            import numpy as np

            np.random.set_state(self._numpy)
