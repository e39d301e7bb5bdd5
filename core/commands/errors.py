"""How the ``ember`` command reports errors.

A user error (a bad setting, path, flag or plugin name) is one short message on
stderr that names the culprit and the fix, and exit status 2. An error raised
in the user's own code keeps its traceback, and exit status 1. ``ember
--traceback ...`` or ``EMBER_TRACEBACK=1`` adds the traceback to the short
messages too (see docs/errors.md)."""

from __future__ import annotations

import os
import sys
import traceback

#: the environment variable that asks for tracebacks
TRACEBACK_ENV = "EMBER_TRACEBACK"

#: the folder of the ember package (this module is in its ``commands`` folder)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USAGE_EXIT = 2
FAILED_EXIT = 1


def traceback_requested(flag: bool = False, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return flag or env.get(TRACEBACK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def user_error(message: str, exc: BaseException | None = None, show_traceback: bool = False) -> int:
    """Print ``error: message`` (after the traceback of ``exc`` when asked for)
    and return exit status 2."""
    if show_traceback and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    text = message.strip()
    print(text if text.startswith("error: ") else f"error: {text}", file=sys.stderr)
    return USAGE_EXIT


def code_error(exc: BaseException, what: str) -> int:
    """An error in the user's code: its traceback, then one line saying what failed."""
    traceback.print_exception(type(exc), exc, exc.__traceback__)
    print(f"error: {what} (traceback above).", file=sys.stderr)
    return FAILED_EXIT


def is_user_error(exc: BaseException) -> bool:
    """Errors that ember reports in one message: stack and usage errors,
    required plugins, unknown role names, unreadable checkpoints, and any
    setting error ember's own code raised (:func:`ember.errors.raised_by_ember`)."""
    from ember.errors import raised_by_ember
    from ember.stack import StackError

    if isinstance(exc, StackError):
        return True
    try:
        from ember.plugin_manager import RequiredPluginsError

        if isinstance(exc, RequiredPluginsError):
            return True
    except Exception:  # pragma: no cover
        pass
    return raised_by_ember(exc)


def one_line(exc: BaseException) -> str:
    """The message of ``exc``, without pluggy's or Python's decoration."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    return text


def shadowing_folder(cwd: str | os.PathLike[str]) -> str | None:
    """The folder named ``ember`` in ``cwd`` that ``import ember`` in a script
    run there (``python train.py``) would find instead of this installed
    ember, or ``None``. Such a folder (with or without ``__init__.py``) makes
    ``ember.Trainer`` fail with "module 'ember' has no attribute 'Trainer'"
    before any of ember's code runs, so only the ``ember`` command, which runs
    from its own directory, can say so."""
    from importlib.machinery import PathFinder

    folder = os.path.join(os.fspath(cwd), "ember")
    if not os.path.isdir(folder):
        return None
    ours = {os.path.realpath(_PACKAGE_DIR)}
    if os.path.realpath(folder) in ours:
        return None
    script_dir = os.path.dirname(os.path.realpath(sys.argv[0])) if sys.argv and sys.argv[0] else None
    path = [os.fspath(cwd), *(p for p in sys.path if p and os.path.realpath(p) != script_dir)]
    spec = PathFinder.find_spec("ember", path)
    if spec is None:
        # editable installs resolve ember through a meta-path finder that runs
        # after the path search: a folder found by the search wins
        return folder if PathFinder.find_spec("ember", [os.fspath(cwd)]) is not None else None
    found = {os.path.realpath(p) for p in (spec.submodule_search_locations or [])}
    if spec.origin and spec.origin not in ("namespace", None):
        found.add(os.path.realpath(os.path.dirname(spec.origin)))
    return None if found & ours else folder


def warn_shadowing(cwd: str | os.PathLike[str]) -> None:
    folder = shadowing_folder(cwd)
    if folder is not None:
        print(
            f"warning: the folder {folder} hides the installed ember package ({_PACKAGE_DIR}) from "
            "Python run in this directory: `import ember` there finds the folder, and `ember.Trainer` fails with "
            "\"module 'ember' has no attribute 'Trainer'\". Rename the folder (or run from another directory).",
            file=sys.stderr,
        )
