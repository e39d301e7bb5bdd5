"""The documentation stays true: the hook reference is current, every hook is
documented, and the Python examples in the docs run.

Convention for runnable examples: in ``README.md`` and ``docs/*.md`` (not
``docs/reference/``), every fenced block tagged ```` ```python ```` is executed,
in order, in one namespace per page, in a temporary working directory. A block
whose first line is ``# not-run`` is skipped (use it for fragments that need a
GPU, a cluster or a name defined elsewhere); blocks tagged ``py``, ``text``,
``toml``, ``bash`` and so on are never run.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GENERATOR = DOCS / "gen_hook_reference.py"
HOOKS_PAGE = DOCS / "reference" / "hooks.md"

NOT_RUN = "# not-run"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL)


def _load_generator():
    spec = importlib.util.spec_from_file_location("ember_gen_hook_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hookspecs():
    from ember import hookspecs

    return [fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "ember_spec")]


# --------------------------------------------------------------------------- hook reference


def test_hook_reference_is_up_to_date() -> None:
    generated = _load_generator().render()
    committed = HOOKS_PAGE.read_text(encoding="utf-8") if HOOKS_PAGE.exists() else ""
    assert committed == generated, (
        "docs/reference/hooks.md is out of date with ember/hookspecs.py: run `python docs/gen_hook_reference.py` and commit the result."
    )


@pytest.mark.slow
def test_plugin_reference_is_up_to_date() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(root / "docs" / "gen_plugin_reference.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_page_is_in_the_site_navigation() -> None:
    root = Path(__file__).resolve().parents[2]
    nav = (root / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.relative_to(root / "docs").as_posix() for p in (root / "docs").rglob("*.md"))
    missing = [page for page in pages if page not in nav]
    assert not missing, f"add these pages to mkdocs.yml's nav: {missing}"


def test_hook_reference_lists_every_hook() -> None:
    page = HOOKS_PAGE.read_text(encoding="utf-8")
    for fn in _hookspecs():
        assert f"### `{fn.__name__}`" in page


@pytest.mark.parametrize("hook", sorted(fn.__name__ for fn in _hookspecs()))
def test_hookspec_documents_its_parameters(hook: str) -> None:
    from ember import hookspecs

    fn = getattr(hookspecs, hook)
    doc = inspect.getdoc(fn) or ""
    assert doc.strip(), f"hookspec {hook} has no docstring"
    missing = [
        name
        for name in inspect.signature(fn).parameters
        if name not in ("trainer", "module") and not re.search(rf"^:param {name}:\s*\S", doc, re.MULTILINE)
    ]
    assert not missing, f"hookspec {hook} does not document {', '.join(missing)} (as ':param name: ...')"


def test_per_step_hooks_are_hooks() -> None:
    from ember import hookspecs

    names = {fn.__name__ for fn in _hookspecs()}
    assert set(hookspecs.PER_STEP_HOOKS) <= names


# --------------------------------------------------------------------------- runnable examples


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    return [p for p in pages if p.exists()]


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each runnable ``python`` block of ``text``."""
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group("info").strip() != "python":
            continue
        code = inspect.cleandoc("\n" + match.group("body")) if match.group("indent") else match.group("body")
        if code.lstrip().startswith(NOT_RUN):
            continue
        blocks.append((text.count("\n", 0, match.start()) + 1, code))
    return blocks


def test_block_parser() -> None:
    text = "a\n```python\nx = 1\n```\n```python\n# not-run\nboom()\n```\n```toml\n[a]\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n")]


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{page.name} has no runnable python blocks")
    monkeypatch.chdir(tmp_path)
    # Keep example runs quiet and self-contained.
    monkeypatch.setenv("EMBER_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A real module, so that dataclasses, pickling and ``save_hyperparameters``
    # behave as they do in a user's script.
    module = types.ModuleType(f"docs_example_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for line, code in blocks:
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as exc:  # re-raise with where it came from
            raise AssertionError(f"example at {page.relative_to(ROOT)} line {line} failed: {exc!r}") from exc
