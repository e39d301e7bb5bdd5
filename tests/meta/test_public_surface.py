"""docs/architecture.md and the code cannot drift apart.

- Every name the page's "public surface" table lists imports from its module,
  and the ``ember`` row is exactly ``ember.__all__``.
- Every kernel module (``core/*.py``, ``core/loops/*.py``) is named on the
  page, and so is every module of ``core/stack/`` and ``core/commands/``.
- The tree table (folders of Python code with line counts) is current within
  the tolerance of ``tools/tree_lines.py`` (regenerate it with
  ``python tools/tree_lines.py --write``).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
SURFACE_START = "<!-- public-surface: checked by tests/meta/test_public_surface.py -->"
SURFACE_END = "<!-- /public-surface -->"
_ROW = re.compile(r"^\|\s*`(?P<module>[\w.]+)`\s*\|(?P<names>.*)\|\s*$")
_NAME = re.compile(r"`([A-Za-z_]\w*)`")


def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def surface(text: str) -> dict[str, list[str]]:
    """The public-surface table of ``text``: module to the names its row lists
    (``"__all__"`` first when the row says the module's ``__all__``)."""
    if SURFACE_START not in text or SURFACE_END not in text:
        raise AssertionError(f"{PAGE.relative_to(ROOT)}: the public-surface markers are missing")
    block = text.split(SURFACE_START, 1)[1].split(SURFACE_END, 1)[0]
    rows = {}
    for line in block.splitlines():
        match = _ROW.match(line)
        if match:
            rows[match["module"]] = _NAME.findall(match["names"])
    return rows


def _tree_lines():
    spec = importlib.util.spec_from_file_location("ember_tools_tree_lines", ROOT / "tools" / "tree_lines.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SURFACE = surface(_page())


def test_the_surface_table_is_found() -> None:
    assert len(SURFACE) >= 20 and "ember" in SURFACE and "ember.trainer" in SURFACE, sorted(SURFACE)
    text = (
        f"{SURFACE_START}\n| module | public names |\n|---|---|\n| `ember.x` | `__all__` (`a`) |\n| `ember.y` | `B`, `c` |\n{SURFACE_END}"
    )
    assert surface(text) == {"ember.x": ["__all__", "a"], "ember.y": ["B", "c"]}


@pytest.mark.parametrize("module_name", sorted(SURFACE))
def test_every_listed_name_imports(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = SURFACE[module_name]
    assert names, f"{PAGE.name}: the row of {module_name} lists no name"
    if names[0] == "__all__":
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{PAGE.name} says '{module_name}: __all__', but {module_name} has no __all__"
        missing = sorted(set(names[1:]) - set(exported))
        assert not missing, f"{PAGE.name} names {missing} as part of {module_name}.__all__, which does not have them"
        names = list(exported)
    absent = [name for name in names if not hasattr(module, name)]
    assert not absent, f"{PAGE.name} lists {absent} as public in {module_name}, which has no such names"


def test_the_top_level_row_is_ember_all() -> None:
    import ember

    listed = set(SURFACE["ember"])
    assert listed == set(ember.__all__), (
        f"{PAGE.name}'s `ember` row and ember.__all__ differ: not listed {sorted(set(ember.__all__) - listed)}, "
        f"not exported {sorted(listed - set(ember.__all__))}"
    )


def _modules(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def test_every_kernel_module_is_on_the_page() -> None:
    text = _page()
    names = [f"ember.{stem}" for stem in _modules(ROOT / "core")]
    names += [f"ember.loops.{stem}" for stem in _modules(ROOT / "core" / "loops")]
    missing = [name for name in names if f"`{name}`" not in text]
    for package in ("stack", "commands"):
        if f"`ember.{package}`" not in text:
            missing.append(f"ember.{package}")
        missing += [f"ember.{package}.{stem}" for stem in _modules(ROOT / "core" / package) if not re.search(rf"\b{stem}\b", text)]
    assert not missing, f"{PAGE.relative_to(ROOT)} does not name {missing}: add them to 'The kernel, module by module' or the tree"


def test_the_tree_table_is_current() -> None:
    tree_lines = _tree_lines()
    problems = tree_lines.differences(tree_lines.page_counts(_page()), tree_lines.counts())
    assert not problems, f"{PAGE.relative_to(ROOT)}'s tree table is stale (run `python tools/tree_lines.py --write`):\n" + "\n".join(
        problems
    )


def test_the_tree_check_finds_drift() -> None:
    tree_lines = _tree_lines()
    actual = {"core/": (50, 9000), "core/loops/": (11, 1600), "plugins/callbacks/": (20, 4000), "total": (81, 14600)}
    assert tree_lines.differences(dict(actual), actual) == []
    near = {**actual, "core/": (52, 9500)}  # within 3 files and 15 %
    assert tree_lines.differences(near, actual) == []
    stale = {**actual, "core/": (40, 9000), "core/loops/": (11, 1000), "plugins/gone/": (1, 10)}
    del stale["plugins/callbacks/"]
    assert tree_lines.differences(stale, actual) == [
        "core/: 50 files, 9000 lines; the page says 40 and 9000",
        "core/loops/: 11 files, 1600 lines; the page says 11 and 1000",
        "plugins/callbacks/: not in the page's table",
        "plugins/gone/: in the page's table, not in the tree",
    ]
    block = f"{tree_lines.START}\n\n{tree_lines.render()}\n\n{tree_lines.END}"
    assert tree_lines.page_counts(block) == tree_lines.counts()
