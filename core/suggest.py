"""Did-you-mean hints for error messages: the one home every ember message,
and any plugin's, uses (standard library only).

>>> closest("val_los", ["val_loss", "train_loss"])
'val_loss'
>>> did_you_mean("val_los", ["val_loss", "train_loss"])
" Did you mean 'val_loss'?"
>>> did_you_mean("max_epoch", ["max_epochs"], prefix="trainer.")
" Did you mean 'trainer.max_epochs'?"
>>> did_you_mean("zzz", ["val_loss"])
''
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["closest", "did_you_mean"]


def closest(name: Any, candidates: Iterable[Any], cutoff: float = 0.5) -> str | None:
    """The candidate most similar to ``name`` (compared as strings), if any
    is at least ``cutoff`` similar (difflib's ratio), else ``None``."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(name: Any, candidates: Iterable[Any], prefix: str = "") -> str:
    """`` Did you mean 'PREFIXmatch'?`` for the closest candidate, or ``""``:
    append it to a message's first sentence. ``prefix`` qualifies the match
    (``"trainer."`` for a stack key)."""
    match = closest(name, candidates)
    return f" Did you mean {prefix + match!r}?" if match else ""
