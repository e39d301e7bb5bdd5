"""Development sessions for ember.

Run ``nox`` for the default session (``tests``: the fast tier, what the
README's test command runs), ``nox -s slow`` for the slow tier (multi-process
and heavy-engine tests), ``nox -s full`` for both, ``nox -l`` to list them all,
and ``nox -s NAME`` for one. Arguments after ``--`` go to the tool a session
runs, e.g. ``nox -s tests -- -k digits -x``.

Every session builds its own virtual environment with the standard library's
``venv``. By default pip resolves ``torch`` from ember's requirements like any
other package. On a CPU-only machine, where the default ``torch`` wheel is a
multi-gigabyte CUDA build, set ``EMBER_TORCH_SPEC`` to what should be
installed first, for instance::

    EMBER_TORCH_SPEC="torch==2.13.0" nox
    EMBER_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" nox
"""

from __future__ import annotations

import os
import shlex

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True


def install_torch(session: nox.Session) -> None:
    """Install torch first when ``EMBER_TORCH_SPEC`` names a particular build."""
    spec = os.environ.get("EMBER_TORCH_SPEC", "").strip()
    if spec:
        session.install(*shlex.split(spec))


#: the oldest torch ember supports (tried, not guessed: see docs/supported-versions.md)
#: and the newest the package index served when the bounds were last checked
TORCH_VERSIONS = ("2.8.0", "2.15.0")


def build_deepspeed_ops(session: nox.Session) -> None:
    """Compile DeepSpeed's C++ ops once per environment, before any test needs them.

    The cache lives in ``.nox/torch_extensions`` (or ``TORCH_EXTENSIONS_DIR``),
    so a later run of the session loads them in under a second.
    """
    cache = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.abspath(os.path.join(".nox", "torch_extensions"))
    session.env["TORCH_EXTENSIONS_DIR"] = cache
    session.run("python", "tools/build_deepspeed_ops.py")


@nox.session(venv_backend="venv")
def tests(session: nox.Session) -> None:
    """The fast tier, as the README's test command runs it (the default session).

    Installs ember in editable mode with its ``dev`` extra and runs pytest,
    which leaves out the tests marked ``slow``; arguments after ``--`` are
    passed to pytest.
    """
    install_torch(session)
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(venv_backend="venv", default=False)
def slow(session: nox.Session) -> None:
    """The slow tier only: multi-process (DDP, torchrun, FSDP, DeepSpeed) and long tests.

    DeepSpeed's ops are built first, with no test timeout around the build.
    """
    install_torch(session)
    session.install("-e", ".[dev]")
    build_deepspeed_ops(session)
    session.run("python", "-m", "pytest", "-m", "slow", *session.posargs)


@nox.session(venv_backend="venv", default=False)
def full(session: nox.Session) -> None:
    """Both tiers in one run (what a release is checked with)."""
    install_torch(session)
    session.install("-e", ".[dev]")
    build_deepspeed_ops(session)
    session.run("python", "-m", "pytest", "-m", "", *session.posargs)


@nox.session(venv_backend="venv", default=False)
@nox.parametrize("torch", TORCH_VERSIONS)
def torch_versions(session: nox.Session, torch: str) -> None:
    """The fast tier against the oldest supported and the newest torch.

    Run it whenever ember's dependency bounds change (``nox -s torch_versions``).
    The wheels are the package index's default builds (large CUDA builds on
    Linux), which is why CI does not run this session on every change.
    """
    # the machine's pip constraints may cap torch below the newest release
    session.env["PIP_CONSTRAINT"] = os.devnull
    session.install(f"torch=={torch}")
    session.install("-e", ".[dev]", f"torch=={torch}")
    session.run("python", "-c", "import torch; print('torch', torch.__version__)")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(venv_backend="venv", default=False)
def lint(session: nox.Session) -> None:
    """Lint with ruff, the version CI runs (pinned in the dev extra; not part of the default run)."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", *(session.posargs or ["."]))


@nox.session(venv_backend="venv", default=False)
def docs(session: nox.Session) -> None:
    """Build the documentation site into ``site/`` and check the docs.

    Regenerates the hook reference (from ``ember.hookspecs``) and the built-in
    plugin reference (from the registry), runs ``tests/docs`` (every hook is
    documented; every page's Python examples run), then builds the site with
    mkdocs-material and mkdocstrings in strict mode, so a broken link or a
    missing page fails the session. ``-- serve`` serves it instead.
    """
    install_torch(session)
    session.install("-e", ".[dev]", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.25")
    session.run("python", "docs/gen_hook_reference.py")
    session.run("python", "docs/gen_plugin_reference.py")
    session.run("python", "-m", "pytest", "tests/docs")
    # mkdocstrings reads sources by package path; ember's lives in core/.
    source_root = os.path.join("build", "docs-src")
    os.makedirs(source_root, exist_ok=True)
    link = os.path.join(source_root, "ember")
    if not os.path.islink(link):
        os.symlink(os.path.abspath("core"), link)
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve")
    else:
        session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session(venv_backend="venv", default=False)
def benchmarks(session: nox.Session) -> None:
    """Measure ember's per-step overhead and import time against raw PyTorch.

    Prints a table and writes the figures to ``.nox/benchmarks.json`` unless
    other arguments are given after ``--`` (they go to
    ``benchmarks/overhead.py``, e.g. ``-- --repeats 61 --check``).
    """
    install_torch(session)
    session.install("-e", ".")
    args = session.posargs or ["--json", ".nox/benchmarks.json"]
    session.run("python", "benchmarks/overhead.py", *args)


@nox.session(venv_backend="venv", default=False)
def examples(session: nox.Session) -> None:
    """Train the examples through the ``ember`` command (digits: seconds on a CPU)."""
    install_torch(session)
    session.install("-e", ".[examples]")
    with session.chdir("examples/digits"):
        session.run("ember", "fit", *session.posargs)
