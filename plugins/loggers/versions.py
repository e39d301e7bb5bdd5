"""Version directories for file loggers: ``{save_dir}/{name}/version_{N}``.

Public helpers, used by the CSV and TensorBoard loggers and by contrib
loggers (ember-jsonl), so that every logger writing numbered run directories
follows the same two rules:

* **A version is claimed atomically.** :func:`claim_version` creates
  ``version_N`` with ``os.mkdir`` and, when another process created it first
  (``FileExistsError``), tries ``N + 1``. Two runs started at once with one
  ``default_root_dir`` never share a directory.
* **A checkpoint never decides where a run writes.** A checkpoint holds the
  version the run was writing to; :func:`version_from_checkpoint` decides what
  a resuming logger does with it. The resuming run's own configuration fixes
  the experiment directory (``save_dir`` and ``name``) and, when given, the
  version. A saved version is only matched against the runs already in that
  directory: a plain ``version_N`` (or a plain directory name) that exists
  there is continued; anything else (an absolute path, a path with ``..`` or
  a separator, a directory that does not exist) is ignored with a warning,
  and so is a saved version that differs from a configured one.
"""

from __future__ import annotations

import os
import re
import warnings

__all__ = ["claim_version", "next_free_version", "version_dirname", "version_from_checkpoint"]

_VERSION_DIR = re.compile(r"^version_(\d+)$")


def version_dirname(version: int | str) -> str:
    """``3`` -> ``"version_3"``; a string is the directory's name as it is."""
    return version if isinstance(version, str) else f"version_{version}"


def next_free_version(root: str) -> int:
    """One more than the highest ``version_N`` directory in ``root`` (0 if none)."""
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    found = [int(m.group(1)) for n in names if (m := _VERSION_DIR.match(n)) and os.path.isdir(os.path.join(root, n))]
    return max(found) + 1 if found else 0


def claim_version(root: str) -> int:
    """Create ``{root}/version_N`` for the next free ``N`` and return ``N``.

    ``os.mkdir`` either creates the directory or fails because it exists, in
    one step, so of several processes claiming the same number exactly one
    gets it; the others move on to the next number.
    """
    os.makedirs(root, exist_ok=True)
    version = next_free_version(root)
    while True:
        try:
            os.mkdir(os.path.join(root, f"version_{version}"))
            return version
        except FileExistsError:
            version += 1


def _plain_name(value: str) -> bool:
    """A single, ordinary path component: no separator, not ``.``/``..``, not absolute."""
    seps = {os.sep, "/", "\\"} | ({os.altsep} if os.altsep else set())
    return bool(value) and value not in (".", "..") and not any(s in value for s in seps) and "\0" not in value


def version_from_checkpoint(owner: str, root: str, configured: int | str | None, saved: object) -> int | str | None:
    """The version a resuming logger writes to, given the one its checkpoint saved.

    :param owner: the logger's name, for the warning (``"CSVLogger"``).
    :param root: the experiment directory from the resuming run's configuration.
    :param configured: the version the logger was constructed with (``None``: pick one).
    :param saved: the version found in the checkpoint.
    :returns: ``saved`` when it names an existing run directory in ``root``
        and nothing else was configured; otherwise ``None`` (keep the
        logger's own version), with a warning when ``saved`` was unusable or
        differs from ``configured``.
    """
    if saved is None:
        return None
    if configured is not None:
        if saved != configured:
            warnings.warn(
                f"{owner}: the checkpoint's logger version {saved!r} differs from the configured version={configured!r}; "
                f"writing to {os.path.join(root, version_dirname(configured))} as configured.",
                UserWarning,
                stacklevel=4,
            )
        return None
    if isinstance(saved, bool) or not isinstance(saved, (int, str)) or (isinstance(saved, int) and saved < 0):
        usable = False
    else:
        usable = _plain_name(version_dirname(saved)) and os.path.isdir(os.path.join(root, version_dirname(saved)))
    if not usable:
        warnings.warn(
            f"{owner}: the checkpoint's logger version {saved!r} is not a run directory in {root}; "
            "it is ignored and this run writes to a new version there. Pass version=... to choose one.",
            UserWarning,
            stacklevel=4,
        )
        return None
    return saved
