"""One tensor walker: ``ember.tensors.apply_to_tensors``. No other function in
the kernel, the built-in plugins or the contrib distributions recurses into
containers looking for tensors (checked on the AST); the few that do for
another purpose are listed below with the reason."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: (file, function) -> why it is not the walker
ALLOWED = {
    ("core/tensors.py", "apply_to_tensors"): "the walker itself",
    # owned by the per-step work (core/loops, core/results.py): reported, to be moved onto the walker there
    ("core/loops/prefetch.py", "_pin"): "per-step prefetch, lead-owned: still its own walker (to move onto apply_to_tensors)",
    ("core/loops/prefetch.py", "_record_stream"): "per-step prefetch, lead-owned: a visit without rebuilding",
    ("core/results.py", "extract_batch_size"): "a search (first tensor's length), not a rebuild; the one batch-size inference",
    # descriptions and comparisons, not rebuilds of a value
    ("core/_testing_support.py", "summarize"): "a short description of a hook argument (depth-limited)",
    ("core/_testing_resume.py", "state_difference"): "compares two states",
    ("core/commands/checkpoint.py", "_plain"): "JSON description of a checkpoint (depth-limited)",
    ("core/role_conformance.py", "_same"): "compares a saved and a loaded checkpoint",
    ("core/hparams.py", "checkpoint_safe"): "restricts hyperparameters to what weights_only loading accepts (not a tensor map)",
}


def _sources() -> Iterator[Path]:
    for top in ("core", "plugins"):
        yield from sorted((ROOT / top).rglob("*.py"))
    for dist in sorted((ROOT / "contrib").iterdir()):
        for path in sorted(dist.rglob("*.py")):
            if "tests" not in path.relative_to(dist).parts:
                yield path


def _mentions_tensor_check(fn: ast.AST) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance" and len(node.args) == 2:
            if "Tensor" in ast.unparse(node.args[1]):
                return True
    return False


def _calls_itself(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == fn.name for n in ast.walk(fn))


def tensor_walkers(source: str) -> list[str]:
    """Names of the functions in ``source`` that call themselves and test for tensors."""
    tree = ast.parse(source)
    return sorted(
        n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _calls_itself(n) and _mentions_tensor_check(n)
    )


def test_no_second_tensor_walker() -> None:
    found = {(p.relative_to(ROOT).as_posix(), name) for p in _sources() for name in tensor_walkers(p.read_text())}
    extra = sorted(found - set(ALLOWED))
    assert not extra, f"walk nested tensors with ember.tensors.apply_to_tensors instead of: {extra}"
    stale = sorted(set(ALLOWED) - found)
    assert not stale, f"no longer walkers, drop them from ALLOWED: {stale}"


def test_checker_finds_a_walker() -> None:
    sample = '''
def walk(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: walk(v, device) for k, v in x.items()}
    return x

def not_a_walker(x):
    return isinstance(x, torch.Tensor)
'''
    assert tensor_walkers(sample) == ["walk"]
