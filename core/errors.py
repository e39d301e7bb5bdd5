"""Exceptions and exit statuses that are part of ember's public API."""

from __future__ import annotations

import sys

#: Exit status of a process that saved a checkpoint because it was preempted
#: (SIGTERM from SLURM, Kubernetes, a spot-instance reclaim). Distinct from 0
#: (done) and 1 (failed), so a wrapper script can tell "requeue me" apart.
EXIT_PREEMPTED = 99


class Preempted(SystemExit):
    """Raised out of ``fit`` after a preemption checkpoint was written. It is a
    ``SystemExit``, so an uncaught one ends the process with its exit status."""

    def __init__(self, code: int = EXIT_PREEMPTED, signal_name: str = "", checkpoint: str = "") -> None:
        super().__init__(code)
        self.signal_name = signal_name
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return f"preempted by {self.signal_name or 'a signal'}; resume from {self.checkpoint}"


class UserError(Exception):
    """A mistake in what the user gave ember (a setting, a path, a plugin name):
    the ``ember`` command prints its message alone, in one short report, and
    exits with status 2. Its message names the culprit and the fix."""


def _ember_dirs() -> tuple[str, ...]:
    import os

    import ember

    dirs = [os.path.dirname(os.path.abspath(ember.__file__))]
    try:
        import ember.plugins

        dirs.append(os.path.dirname(os.path.abspath(ember.plugins.__file__)))
    except Exception:  # pragma: no cover - a broken install
        pass
    return tuple(d + os.sep for d in dirs)


def _library_dirs() -> tuple[str, ...]:
    import os
    import sys
    import sysconfig

    paths = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)}
    return tuple(os.path.abspath(p) + os.sep for p in paths if p)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return seen


#: exception types that, raised by ember's own code with no user code on the
#: stack, report a bad setting or input rather than a bug in the user's code
_SETTING_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, RuntimeError, OSError, LookupError)


def raised_by_ember(exc: BaseException) -> bool:
    """Whether ``exc`` reports a user mistake that ember's own code detected:
    a :class:`UserError`, or a ``ValueError``/``TypeError``/``RuntimeError``/
    ``OSError``/``LookupError`` raised in ember's code (``ember`` and
    ``ember.plugins``) while no frame of the user's code (or of a third-party
    plugin) was running, in it or in anything it was raised from. Errors from
    the user's own code keep their traceback."""
    import os
    import traceback

    if isinstance(exc, UserError):
        return True
    if not isinstance(exc, _SETTING_ERRORS):
        return False
    ember_dirs, lib_dirs = _ember_dirs(), _library_dirs()
    innermost = ""
    for link in _chain(exc):
        for frame in traceback.extract_tb(link.__traceback__):
            name = os.path.abspath(frame.filename) if not frame.filename.startswith("<") else frame.filename
            if link is exc:
                innermost = name
            if name.startswith("<") or name.startswith(ember_dirs) or name.startswith(lib_dirs):
                continue
            return False  # the user's code (or a third-party plugin) was running
    return innermost.startswith(ember_dirs)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` where Python has it (3.11+); on 3.10 the note is
    kept in ``exc.__notes__``, where 3.11's traceback would print it."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
