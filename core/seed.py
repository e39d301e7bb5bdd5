"""Seeding every random number generator a training run touches."""

from __future__ import annotations

import os
import random
from typing import Any

import torch


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed Python's, NumPy's (if installed) and torch's generators (CPU and
    every CUDA device) and return the seed. ``None`` reads ``EMBER_GLOBAL_SEED``
    or falls back to 0. ``workers=True`` makes dataloader workers derive
    distinct, reproducible seeds (exported as ``EMBER_SEED_WORKERS``).
    ``verbose`` logs the seed (``"ember"`` logger, INFO)."""
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
    if verbose:
        import logging

        logging.getLogger("ember").info("Seed set to %d", seed)
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


def rng_state() -> dict[str, Any]:
    """Every generator ``seed_everything`` seeds, in a form that
    ``torch.load(weights_only=True)`` reads back (no NumPy arrays, no pickled
    objects)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
