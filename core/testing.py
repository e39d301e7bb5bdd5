"""``ember.testing``: pytest fixtures and helpers for testing ember plugins.

ember registers this module as a pytest plugin (the ``pytest11`` entry point
named ``ember``), so in any project where ember is installed a test can ask
for these fixtures by name, with no import and no ``conftest.py``:

``tiny_module``
    a fresh :class:`TinyModule`: linear regression with training, validation,
    test and predict steps (logging ``train_loss``, ``val_loss``,
    ``test_loss``) and its own dataloaders.
``tiny_datamodule``
    a fresh :class:`TinyDataModule` with the same kind of data.
``make_trainer``
    ``make_trainer(**kwargs) -> ember.Trainer`` with quiet defaults: no
    progress bar, model summary, logger, checkpointing or fault-tolerance
    handler unless asked for, ``max_epochs=1`` and ``default_root_dir`` the
    test's ``tmp_path``.
``hook_recorder``
    a :class:`HookRecorder` callback: records ``(hook_name, args summary)``
    for every hook, with ``assert_order([...])``, ``names()`` and
    ``count(name)``.

:func:`quiet_trainer` (``quiet_trainer(root, **kwargs)``) is the function behind
``make_trainer``, for helpers that have no fixture at hand: it is the one
test trainer factory, used by ember's own tests and the contrib
distributions' tests. :func:`assert_survives_resume` checks that a callback's or plugin's
``state_dict()`` comes back from a checkpoint and the run carries on.

For logger authors, :class:`LoggerConformance` is the logger conformance
suite: subclass it with a :class:`LoggerSpec` (how to build the logger, how to
read its store back, its flush settings and SIGKILL loss bound) and pytest
runs seven real-fit scenarios against the logger (short run, flush
thresholds, several loggers, evaluation without fit, exception, SIGTERM and
resume, SIGKILL); see docs/loggers.md, "Testing a logger".

For role providers (accelerator, strategy, precision, checkpoint IO, cluster
environment), ``check_accelerator``, ``check_accelerator_factory``,
``check_strategy``, ``check_precision``, ``check_checkpoint_io`` and
``check_cluster_environment`` run a provider through its role's contract on
the CPU and raise :class:`RoleConformanceError` naming the broken promise;
ember runs the same checks on every built-in provider.

The plugin does nothing else: no hooks, no options, no collection changes.
Importing it defines the fixtures and imports neither torch nor the rest of
ember; the classes above load on first use (``from ember.testing import
TinyModule`` works too). When pytest runs with
``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``, turn it on with ``-p ember``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ember._testing_support import QUIET_DEFAULTS, HookCall, HookRecorder, ResumeReport, TinyDataModule, TinyModule, quiet_trainer
    from ember.logger_conformance import Handle, KillBound, LoggerConformance, LoggerSpec, Stored
    from ember.role_conformance import (
        RoleConformanceError,
        check_accelerator,
        check_accelerator_factory,
        check_checkpoint_io,
        check_cluster_environment,
        check_precision,
    )
    from ember.role_conformance_strategy import check_strategy, strategy_role_kwargs

__all__ = [
    "QUIET_DEFAULTS",
    "Handle",
    "HookCall",
    "HookRecorder",
    "KillBound",
    "LoggerConformance",
    "LoggerSpec",
    "ResumeReport",
    "RoleConformanceError",
    "Stored",
    "TinyDataModule",
    "TinyModule",
    "assert_survives_resume",
    "check_accelerator",
    "check_accelerator_factory",
    "check_checkpoint_io",
    "check_cluster_environment",
    "check_precision",
    "check_strategy",
    "hook_recorder",
    "make_trainer",
    "quiet_trainer",
    "strategy_role_kwargs",
    "tiny_datamodule",
    "tiny_module",
]

#: names served from ember._testing_support on first use (it imports torch)
_LAZY = frozenset({"QUIET_DEFAULTS", "HookCall", "HookRecorder", "ResumeReport", "TinyDataModule", "TinyModule", "quiet_trainer"})
#: names served from ember.logger_conformance on first use (the logger conformance suite)
_LAZY_CONFORMANCE = frozenset({"Handle", "KillBound", "LoggerConformance", "LoggerSpec", "Stored"})
#: names served from ember.role_conformance(_strategy) on first use (behavioural checks of role providers)
_LAZY_ROLES = frozenset(
    {
        "RoleConformanceError",
        "check_accelerator",
        "check_accelerator_factory",
        "check_checkpoint_io",
        "check_cluster_environment",
        "check_precision",
        "check_strategy",
        "strategy_role_kwargs",
    }
)


def __getattr__(name: str) -> Any:
    if name in _LAZY_ROLES:
        from ember import role_conformance, role_conformance_strategy

        value = getattr(role_conformance_strategy if "strategy" in name else role_conformance, name)
        globals()[name] = value
        return value
    if name in _LAZY_CONFORMANCE:
        from ember import logger_conformance

        value = getattr(logger_conformance, name)
        globals()[name] = value
        return value
    if name in _LAZY:
        from ember import _testing_support

        value = getattr(_testing_support, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.testing' has no attribute {name!r}")


# No module __dir__ listing the lazy names: pytest and pluggy look at every
# name dir() returns when they register a plugin, which would import torch.


@pytest.fixture
def tiny_module() -> TinyModule:
    """A fresh :class:`TinyModule` (same initial weights every time)."""
    from ember._testing_support import TinyModule

    return TinyModule()


@pytest.fixture
def tiny_datamodule() -> TinyDataModule:
    """A fresh :class:`TinyDataModule`."""
    from ember._testing_support import TinyDataModule

    return TinyDataModule()


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., Any]:
    """``make_trainer(**kwargs)``: an ``ember.Trainer`` under ``tmp_path`` with
    quiet defaults (``QUIET_DEFAULTS``); any keyword overrides them."""
    from ember._testing_support import quiet_trainer

    def factory(**kwargs: Any) -> Any:
        return quiet_trainer(tmp_path, **kwargs)

    return factory


@pytest.fixture
def hook_recorder() -> HookRecorder:
    """A fresh :class:`HookRecorder`; pass it in ``callbacks=[...]``."""
    from ember._testing_support import HookRecorder

    return HookRecorder()


def assert_survives_resume(
    factory: Callable[[], Any],
    make_trainer: Callable[..., Any],
    module_factory: Callable[[], Any] | None = None,
    **kwargs: Any,
) -> ResumeReport:
    """Fit with ``factory()``'s instance, save a checkpoint, resume in a fresh
    trainer with a fresh instance, and assert its ``state_dict()`` round-tripped
    and ``global_step`` continued. ``module_factory`` defaults to
    :class:`TinyModule`. Keywords: ``datamodule_factory``, ``first_epochs``
    (1), ``total_epochs`` (2), ``allow_empty_state`` (False),
    ``checkpoint_name``, and any ``Trainer`` argument for both runs. Returns
    a :class:`ResumeReport`."""
    from ember import _testing_support

    return _testing_support.assert_survives_resume(factory, make_trainer, module_factory, **kwargs)
