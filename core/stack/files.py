"""Finding the stack file (``--config``, else ``ember.toml`` or a
``pyproject.toml`` with ``[tool.ember]`` in the working directory and its
parents, up to the repository root, the home directory or a directory owned
by someone else) and reading it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ember.stack.keys import StackError, show, tomllib


def read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(f"{label}: not valid TOML: {exc}.") from None
    except OSError as exc:
        raise StackError(f"{label}: cannot read the stack file: {exc.strerror or exc}.") from None


def file_label(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)


def find_stack_file(config: str | os.PathLike[str] | None, cwd: str | os.PathLike[str]) -> tuple[Path | None, dict[str, Any] | None]:
    """The stack file and its table (``[tool.ember]`` for a ``pyproject.toml``),
    or ``(None, None)`` when there is none."""
    cwd = Path(cwd)
    if config is not None:
        path = Path(config).expanduser()
        if not path.is_absolute():
            path = cwd / path
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise StackError(f"--config {config}: the stack file {path} {what}.")
        data = read_toml(path, file_label(path, cwd))
        if path.name == "pyproject.toml":
            tool = data.get("tool", {})
            if not isinstance(tool, dict) or "ember" not in tool:
                raise StackError(
                    f"{file_label(path, cwd)}: has no [tool.ember] table. Add one, or put the stack in an ember.toml "
                    "(same keys, without the tool.ember prefix)."
                )
            return path, ember_table(tool["ember"], path, cwd)
        return path, data
    for directory in search_dirs(cwd)[0]:
        candidate = directory / "ember.toml"
        if candidate.is_file():
            return candidate, read_toml(candidate, file_label(candidate, cwd))
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            data = read_toml(candidate, file_label(candidate, cwd))
            tool = data.get("tool")
            if isinstance(tool, dict) and "ember" in tool:
                return candidate, ember_table(tool["ember"], candidate, cwd)
    return None, None


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def search_dirs(cwd: str | os.PathLike[str]) -> tuple[list[Path], str]:
    """The directories stack discovery reads, nearest first, and why it stops
    there: at the first one holding ``.git`` (the repository root), at the
    user's home directory, or below a directory owned by another user (as
    git's ``safe.directory`` does), so that nobody else's file is ever read
    as your stack; else at the filesystem root. The working directory itself
    is always read."""
    cwd = Path(cwd)
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        home: Path | None = Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        home = None
    dirs: list[Path] = []
    for directory in (cwd, *cwd.parents):
        if dirs and uid is not None and _owner(directory) not in (uid, None):
            return dirs, f"stopped below {directory}, which is owned by another user"
        dirs.append(directory)
        if (directory / ".git").exists():
            return dirs, f"stopped at {directory}, the repository root (.git)"
        if home is not None and directory.resolve() == home:
            return dirs, f"stopped at {directory}, your home directory"
    return dirs, "reached the filesystem root"


def ember_table(value: Any, path: Path, cwd: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StackError(f"{file_label(path, cwd)}: tool.ember: expected a table ([tool.ember]), got {show(value)}.")
    return value
