"""The shell examples in the docs run as written, and print what the page shows.

Convention: in ``README.md``, ``docs/**/*.md`` (not ``docs/reference/``) and
``examples/*/README.md``, every fenced block tagged ```` ```console ```` is a
terminal session that is executed:

- a line starting with ``$ `` is a command, run by bash; the lines after it,
  up to the next command, are what it must print, matched in order, whole
  lines, ``*`` standing for any text (every other character is literal),
  against its output (stdout and stderr
  together), other lines allowed in between; a line ``...`` matches nothing
  in particular and only says that more is printed;
- every command must exit with status 0;
- a block whose first line is ``# not-run`` is skipped (a cluster, a GPU, a
  download);
- the blocks of one page run in order in one sandbox: a temporary copy of the
  repository's ``examples/`` directory. A block of ``docs/`` or ``README.md``
  starts at the sandbox's root (so ``cd examples/digits`` works as in a
  checkout); a block of ``examples/NAME/README.md`` starts in
  ``examples/NAME``. ``cd`` carries on to the next command of the same block.

Blocks tagged ``bash`` are never run: use them for installs and for commands
that need what a test machine lacks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_RUN = "# not-run"
_FENCE = re.compile(r"^```console[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARK = "@@ember-docs@@"


def console_blocks(text: str) -> list[tuple[int, list[tuple[str, list[str]]]]]:
    """``(line number, [(command, expected lines), ...])`` per runnable block."""
    blocks = []
    for match in _FENCE.finditer(text):
        lines = match.group("body").splitlines()
        if lines and lines[0].strip() == NOT_RUN:
            continue
        session: list[tuple[str, list[str]]] = []
        for line in lines:
            if line.startswith("$ "):
                session.append((line[2:].strip(), []))
            elif session and line.strip() and line.strip() != "...":
                session[-1][1].append(line.strip())
        if session:
            blocks.append((text.count("\n", 0, match.start()) + 1, session))
    return blocks


def match_in_order(expected: list[str], output: str) -> str | None:
    """``None`` when every pattern matches a line of ``output`` in order, else the first that does not."""
    lines = [line.strip() for line in output.splitlines()]
    position = 0
    for pattern in expected:
        regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")))
        while position < len(lines) and not regex.fullmatch(lines[position]):
            position += 1
        if position == len(lines):
            return pattern
        position += 1
    return None


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "reference" not in p.parts)]
    pages += sorted((ROOT / "examples").glob("*/README.md"))
    return [page for page in pages if console_blocks(page.read_text(encoding="utf-8"))]


def test_block_parser() -> None:
    text = "```console\n$ ember fit\n...\nval_acc  0.9*\n$ cd x && ls\n```\n```console\n# not-run\n$ boom\n```\n```bash\nember x\n```\n"
    assert console_blocks(text) == [(1, [("ember fit", ["val_acc  0.9*"]), ("cd x && ls", [])])]


def test_matching_is_in_order_with_wildcards() -> None:
    assert match_in_order(["a*", "c"], "a1\nb\nc\n") is None
    assert match_in_order(["c", "a*"], "a1\nb\nc\n") == "a*"
    assert match_in_order(["[medical] * (synthetic)"], "[medical] data (synthetic)\n") is None  # [ ] are literal
    assert match_in_order(["[medical] x"], "m x\n") == "[medical] x"


def _run_block(session: list[tuple[str, list[str]]], start: Path, env: dict[str, str]) -> list[tuple[str, int, str]]:
    script = ["set -u", f"cd {str(start)!r}"]
    for i, (command, _) in enumerate(session):
        script += [f"printf '\\n{_MARK} {i}\\n'", command, f"printf '\\n{_MARK} status %d\\n' $?"]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600
    )
    results = []
    for i, (command, _) in enumerate(session):
        chunk = done.stdout.split(f"{_MARK} {i}\n", 1)[1] if f"{_MARK} {i}\n" in done.stdout else ""
        output, _, rest = chunk.partition(f"{_MARK} status ")
        status = int(rest.split("\n", 1)[0]) if rest else -1
        results.append((command, status, output))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_shell_examples_run(page: Path, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("ember_logs", "__pycache__", "*.ckpt"))
    start = tmp_path / page.parent.relative_to(ROOT) if page.parent.parent.name == "examples" else tmp_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    for line, session in console_blocks(page.read_text(encoding="utf-8")):
        for (command, status, output), (_, expected) in zip(_run_block(session, start, env), session, strict=False):
            where = f"{page.relative_to(ROOT)} line {line}: `{command}`"
            assert status == 0, f"{where} exited with {status}:\n{output[-3000:]}"
            missing = match_in_order(expected, output)
            assert missing is None, f"{where} did not print a line matching {missing!r}; it printed:\n{output[-3000:]}"
