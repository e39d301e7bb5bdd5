"""The compatibility corpus: modules written the way Lightning projects are
written, each run under ember and under Lightning by ``tests/compat/test_corpus.py``.

Every module defines ``run(fw, root) -> dict``: it trains with ``fw`` (see
``tests/compat/frameworks.py``) and returns what must be equal between the
two (weights, validate/test results, predictions, logged values).
"""

from pathlib import Path

MODULES = tuple(sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_")))
