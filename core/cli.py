"""The ``ember`` console script's entry point (``ember = "ember.cli:main"``).

The commands live in :mod:`ember.commands`; this module only keeps the
entry point and ``python -m ember.cli`` working. It imports nothing heavy.
"""

from __future__ import annotations

import sys

from ember.commands.main import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
