#!/usr/bin/env python
"""Run tests/compat/test_lightning_names_cuda.py on a GPU machine that has
PyTorch but not ember installed: maps ``ember`` to core/ and ``ember.plugins``
to plugins/, and runs each test function with a fresh temporary directory
(no pytest needed). Extra pure-Python dependencies (pluggy, packaging, tqdm)
are taken from the directory given as the first argument, if any."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _package(name: str, folder: Path) -> None:
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def main() -> int:
    if len(sys.argv) > 1:
        sys.path.insert(0, sys.argv[1])
    _package("ember", ROOT / "core")
    _package("ember.plugins", ROOT / "plugins")
    sys.modules["ember"].plugins = sys.modules["ember.plugins"]
    spec = importlib.util.spec_from_file_location("cuda_checks", ROOT / "tests" / "compat" / "test_lightning_names_cuda.py")
    tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests)
    failed = 0
    for name in sorted(n for n in vars(tests) if n.startswith("test_")):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                getattr(tests, name)(Path(tmp))
                print(f"PASS {name}", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
