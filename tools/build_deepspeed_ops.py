"""Build DeepSpeed's JIT-compiled C++ ops once, ahead of the tests.

DeepSpeed compiles its CPU ops with g++ and ninja the first time a process
needs them (20-60 s each on 2 cores) and caches the result in
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``). A test that
hits the build inside its own timeout can fail for no fault of its own, so CI
and ``nox -s slow`` run this script first, with its own generous limit, and the
tests then load the cached ops in well under a second.

Usage: ``python tools/build_deepspeed_ops.py [--ops ShareMemCommBuilder CPUAdamBuilder]``.
Prints each op with its build time; exits 0 without doing anything when
DeepSpeed is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

DEFAULT_OPS = ("ShareMemCommBuilder", "CPUAdamBuilder")


def build(ops: tuple[str, ...] = DEFAULT_OPS) -> dict[str, float]:
    """Load (building where needed) each named op builder; return seconds per op."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    seconds: dict[str, float] = {}
    for name in ops:
        start = time.perf_counter()
        accelerator.create_op_builder(name).load(verbose=False)
        seconds[name] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=list(DEFAULT_OPS), help="op builder names (default: %(default)s)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("deepspeed") is None:
        print("deepspeed is not installed: nothing to build")
        return 0
    where = os.environ.get("TORCH_EXTENSIONS_DIR", "~/.cache/torch_extensions")
    for name, secs in build(tuple(args.ops)).items():
        print(f"{name}: ready in {secs:.1f} s (cache: {where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
