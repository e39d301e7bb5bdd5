"""The kernel/plugin wall, checked on the source (AST), so it stays up:

- no module under ``plugins/`` or ``contrib/*/`` reads or writes a private
  attribute of the trainer (``trainer._x``, ``self.trainer._x``,
  ``getattr(trainer, "_x")``): a plugin sees the run through the Trainer's
  documented properties, which a third party can use too;
- none imports a private name from ember or from another plugin module (a
  package's own ``_helpers`` module is package-private and allowed inside that
  package only);
- none reaches into another module's private attributes: ``x._name`` (or
  ``getattr(x, "_name")``) on anything but ``self``, ``cls`` or ``super()``
  is refused (a) whenever ``x`` is a strategy (``strategy``, ``s``,
  ``*_strategy``, ``<anything>.strategy``), even inside the strategy's own
  module: a launcher or callback uses the strategy's public members, as a
  third party's would; and (b) whenever ``_name`` is a private attribute,
  method or function that another ember module (kernel, built-in or contrib)
  defines and this module does not. A package's private helper module
  (``pkg/_helpers.py``) may reach the privates of its own package's modules, as it
  may import them. Private members of other libraries (torch's) are not
  ember's wall and are not checked;
- the kernel (``core/`` without its tools, see ``KERNEL_EXCLUDED``) imports no concrete
  plugin module: built-ins reach it only through the plugin manager's
  ``BUILTIN_PLUGINS`` tuple (and the lazy ``ember.callbacks`` /
  ``ember.loggers`` name tables).

Each checker is also run on a small bad sample, so a checker that stops
finding anything fails here instead of passing silently.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Not the kernel: the ``ember`` subcommands, the scaffolding templates, and the
#: logger conformance kit (a test harness that runs the built-in loggers beside
#: the one under test, and reads their files back, by design).
KERNEL_EXCLUDED = ("commands", "templates", "logger_conformance_suite.py", "logger_readback.py")


# --------------------------------------------------------------------------- where the code is


def _plugin_files() -> Iterator[tuple[Path, str]]:
    """(path, dotted module name) of every built-in and contrib plugin module."""
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield path, ".".join(("ember", *parts))
    for dist in sorted((ROOT / "contrib").iterdir()):
        for path in sorted(dist.rglob("*.py")):
            rel = path.relative_to(dist)
            if rel.parts[0] in ("tests", "build") or len(rel.parts) < 2:
                continue
            yield path, ".".join(rel.with_suffix("").parts)


def _kernel_files() -> Iterator[tuple[Path, str]]:
    for path in sorted((ROOT / "core").rglob("*.py")):
        rel = path.relative_to(ROOT / "core")
        if rel.parts[0] in KERNEL_EXCLUDED:
            continue
        yield path, ".".join(("ember", *rel.with_suffix("").parts))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package_of(module: str, path: Path) -> str:
    name = module.removesuffix(".__init__")
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


# --------------------------------------------------------------------------- the checkers


def _is_trainer(node: ast.expr) -> bool:
    """``trainer``, ``self.trainer``, ``module.trainer``, ``self._trainer``, ``pl_trainer``..."""
    if isinstance(node, ast.Name):
        return node.id == "trainer" or node.id.endswith("_trainer")
    return isinstance(node, ast.Attribute) and node.attr in ("trainer", "_trainer")


def private_trainer_access(source: str) -> list[str]:
    """Every ``<trainer>._x`` and ``getattr/setattr/hasattr/delattr(<trainer>, "_x")`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and _is_trainer(node.value):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and _is_trainer(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def _imports(tree: ast.AST, module: str, path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, absolute module, imported name or None) of every import in ``tree``."""
    package = _package_of(module, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, target] if target else base)
            for alias in node.names:
                yield node.lineno, target, alias.name


def private_imports(source: str, module: str, path: Path, own_roots: tuple[str, ...]) -> list[str]:
    """Private names imported from ember or another plugin module. A private
    module (``pkg._helpers``) may be imported by the modules of ``pkg`` only."""
    package = _package_of(module, path)
    found = []
    for line, target, name in _imports(ast.parse(source), module, path):
        if target.split(".")[0] not in own_roots:
            continue
        full = target if name is None else f"{target}.{name}"
        parts = full.split(".")
        for i, part in enumerate(parts):
            if not _is_private(part):
                continue
            owner = ".".join(parts[:i])
            # A package-private helper module, imported from inside its package.
            if owner == package and (i < len(parts) - 1 or _is_submodule(owner, part)):
                continue
            found.append(f"line {line}: {full}")
            break
    return found


def _is_submodule(package: str, name: str) -> bool:
    parts = package.split(".")
    if parts[:2] == ["ember", "plugins"]:
        base = ROOT / "plugins" / Path(*parts[2:]) if len(parts) > 2 else ROOT / "plugins"
    elif parts[0] == "ember":
        base = ROOT / "core" / Path(*parts[1:]) if len(parts) > 1 else ROOT / "core"
    else:
        base = next((d / Path(*parts) for d in (ROOT / "contrib").iterdir() if (d / parts[0]).is_dir()), ROOT / "missing")
    return (base / f"{name}.py").is_file() or (base / name / "__init__.py").is_file()


def concrete_plugin_imports(source: str, module: str, path: Path) -> list[str]:
    """Imports of ``ember.plugins.<something>`` (the package itself is not a plugin)."""
    found = []
    for line, target, name in _imports(ast.parse(source), module, path):
        full = target if name is None or target != "ember.plugins" else f"{target}.{name}"
        if full.startswith("ember.plugins."):
            found.append(f"line {line}: {full}")
    return found


def _is_strategy(node: ast.expr) -> bool:
    """``strategy``, ``s``, ``my_strategy``, ``trainer.strategy``, ``self.strategy``, ``self._strategy``..."""
    if isinstance(node, ast.Name):
        return node.id in ("strategy", "s") or node.id.endswith("_strategy")
    return isinstance(node, ast.Attribute) and node.attr in ("strategy", "_strategy")


def defined_privates(source: str) -> set[str]:
    """The private names ``source`` defines: functions, classes and methods,
    ``self._x``/``cls._x`` assignments, and private names it assigns."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _is_private(node.name):
            names.add(node.name)
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in (e for t in targets for e in ast.walk(t)):
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"):
                names.add(target.attr) if _is_private(target.attr) else None
            elif isinstance(target, ast.Name) and _is_private(target.id):
                names.add(target.id)
    return names


def private_reaches(source: str, elsewhere: set[str]) -> list[str]:
    """Every ``x._name`` in ``source`` (``x`` not ``self``/``cls``/``super()``)
    on a strategy, or with ``_name`` in ``elsewhere`` (privates other ember
    modules define) but not defined by ``source`` itself."""
    here = defined_privates(source)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner, name = node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            owner, name = node.args[0], node.args[1].value
        else:
            continue
        if not _is_private(name) or (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
            continue
        if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super":
            continue
        if _is_strategy(owner) or (name in elsewhere and name not in here):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return sorted(set(found), key=lambda hit: int(hit.split()[1].rstrip(":")))


def _contrib_roots() -> tuple[str, ...]:
    return tuple(p.name for d in (ROOT / "contrib").iterdir() for p in d.iterdir() if (p / "__init__.py").is_file())


# --------------------------------------------------------------------------- the wall


def test_no_plugin_touches_a_private_trainer_attribute() -> None:
    problems = [
        f"{path.relative_to(ROOT)} {hit}" for path, _ in _plugin_files() for hit in private_trainer_access(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "plugins must read the run through the Trainer's public properties:\n" + "\n".join(problems)


def test_no_plugin_imports_a_private_name() -> None:
    roots = ("ember", *_contrib_roots())
    problems = [
        f"{path.relative_to(ROOT)} {hit}"
        for path, module in _plugin_files()
        for hit in private_imports(path.read_text(encoding="utf-8"), module, path, roots)
    ]
    assert not problems, "plugins must import only public names (make the helper public, with a docstring):\n" + "\n".join(problems)


def test_no_plugin_reaches_into_another_modules_privates() -> None:
    plugins = list(_plugin_files())
    defined = {path: defined_privates(path.read_text(encoding="utf-8")) for path, _ in [*plugins, *_kernel_files()]}
    problems = []
    for path, _ in plugins:
        # A package's private helper module may use its own package's privates (as it may import them).
        own_package = path.parent if path.name.startswith("_") and path.name != "__init__.py" else None
        elsewhere = set().union(*(names for other, names in defined.items() if other != path and other.parent != own_package))
        problems += [f"{path.relative_to(ROOT)} {hit}" for hit in private_reaches(path.read_text(encoding="utf-8"), elsewhere)]
    assert not problems, "use (or add, documented) a public member of the object instead:\n" + "\n".join(problems)


def test_the_kernel_imports_no_concrete_plugin() -> None:
    files = list(_kernel_files())
    assert any(module == "ember.trainer" for _, module in files)
    problems = [
        f"{path.relative_to(ROOT)} {hit}" for path, module in files for hit in concrete_plugin_imports(path.read_text(encoding="utf-8"), module, path)
    ]
    assert not problems, "the kernel reaches built-ins only through BUILTIN_PLUGINS and the role registry:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the checkers find what they must


def test_private_trainer_access_is_found() -> None:
    sample = (
        "x = trainer._placed_module\n"
        "self.trainer._callback_metrics = {}\n"
        "getattr(trainer, '_explicit_loaders', None)\n"
        "module.trainer._dispatch.setup\n"
        "trainer.callback_metrics\n"  # public: fine
        "self._cache = 1\n"  # the plugin's own state: fine
    )
    hits = private_trainer_access(sample)
    assert sorted(h.split(":")[0] for h in hits) == ["line 1", "line 2", "line 3", "line 4"]


def test_private_imports_are_found(tmp_path: Path) -> None:
    ddp = ROOT / "plugins" / "strategies" / "fsdp.py"
    sample = (
        "from ember.plugins.strategies.ddp import SpawnLauncher, _SpawnLauncher\n"
        "from ember.roles import _closest\n"
        "from ember._version import __version__\n"
        "from ember.plugins.loggers._common import flatten\n"  # another package's private module
        "from .spawn_launcher import _ship\n"
        "from ember.plugins.strategies import rank_failure\n"  # public: fine
    )
    hits = private_imports(sample, "ember.plugins.strategies.fsdp", ddp, ("ember",))
    assert sorted(h.split(":")[0] for h in hits) == ["line 1", "line 2", "line 3", "line 4", "line 5"]
    own = "from ember.plugins.loggers._common import flatten\nfrom ember.plugins.loggers import _common\n"
    assert private_imports(own, "ember.plugins.loggers.csv_logger", ROOT / "plugins" / "loggers" / "csv_logger.py", ("ember",)) == []


def test_private_reaches_are_found() -> None:
    sample = (
        "strategy._final_state = state\n"  # into a strategy, even one defined in this module
        "if s._spawned_worker or s._ranks is not None: pass\n"
        "return not self.strategy._in_worker\n"
        "getattr(trainer.strategy, '_ranks', None)\n"
        "cb._recent.append(path)\n"  # another module's private
        "self._ranks = (0, 0, 0, 1)\n"  # its own: fine
        "super()._new_tqdm()\n"  # fine
        "sampler._num_samples\n"  # torch's, not ember's: fine
        "other._mine = 1\n"  # defined in this module (line 11): not a reach into another module
        "class Mine:\n"
        "    def _mine(self): ...\n"
    )
    hits = private_reaches(sample, elsewhere={"_recent", "_mine", "_ranks"})
    assert [h.split(":")[0] for h in hits] == ["line 1", "line 2", "line 2", "line 3", "line 4", "line 5"]
    assert "_mine" in defined_privates(sample) and private_reaches("x._recent\n", elsewhere=set()) == []


def test_concrete_plugin_imports_are_found() -> None:
    sample = (
        "import ember.plugins\n"  # the package: fine
        "def f():\n"
        "    from ember.plugins.checkpoint_io.torch_io import TorchCheckpointIO\n"
        "from ember.plugins import strategies\n"
        "import ember.plugins.strategies.ddp as ddp\n"
    )
    hits = concrete_plugin_imports(sample, "ember.checkpointing", ROOT / "core" / "checkpointing.py")
    assert sorted(h.split(":")[0] for h in hits) == ["line 3", "line 4", "line 5"]


#: The Trainer class: trainer.py and the modules its mixins live in.
TRAINER_FILES = ["trainer.py", "trainer_run.py", "trainer_properties.py", "trainer_checkpoint.py"]


@pytest.mark.parametrize("name", [*TRAINER_FILES, "trainer_compat.py"])
def test_early_stopping_is_not_found_by_class_name(name: str) -> None:
    source = (ROOT / "core" / name).read_text(encoding="utf-8")
    assert '"EarlyStopping"' not in source, f"core/{name}: find stopping callbacks by the StopsTraining protocol"


def test_the_loops_probe_no_strategy_by_name() -> None:
    """Optional strategy capabilities are named protocols in ``ember.roles``
    (checked with ``isinstance``), not ``getattr(strategy, "name")`` probes."""
    files = [*(ROOT / "core" / name for name in TRAINER_FILES), *sorted((ROOT / "core" / "loops").glob("*.py"))]
    problems = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
                and "strategy" in ast.unparse(node.args[0]).rsplit(".", 1)[-1]
            ):
                problems.append(f"{path.relative_to(ROOT)} line {node.lineno}: {ast.unparse(node)}")
    assert not problems, "declare the capability as a protocol in ember.roles:\n" + "\n".join(problems)


def test_every_hook_is_a_declared_dispatch_attribute() -> None:
    """The dispatch facade is typed: each hookspec has one declared attribute
    on ``Dispatch`` (and nothing else is declared)."""
    from ember.dispatch import Dispatch
    from ember.plugin_manager import _HOOK_NAMES

    declared = {name for name in Dispatch.__annotations__ if name != "owners"}
    assert declared == set(_HOOK_NAMES), (sorted(declared - set(_HOOK_NAMES)), sorted(set(_HOOK_NAMES) - declared))


def test_no_hook_name_is_built_from_a_string() -> None:
    """No fire site in the kernel picks a hook with ``getattr(dispatch, <expression>)``."""
    problems = []
    for path, _ in _kernel_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and (ast.unparse(node.args[0]) == "d" or "dispatch" in ast.unparse(node.args[0]).lower())
            ):
                problems.append(f"{path.relative_to(ROOT)} line {node.lineno}: {ast.unparse(node)}")
    assert not problems, "fire hooks through Dispatch's declared attributes:\n" + "\n".join(problems)
