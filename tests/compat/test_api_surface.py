"""The API-surface table: every public name of the installed PyTorch Lightning
that user code touches is provided by ember with a compatible signature, or
excluded (with a reason) in tests/compat/exclusions.toml. The table is
rendered to docs/reference/lightning-api.md, which must be current.

Lightning (``pytorch_lightning``) is a test-only dependency; nothing of it is
imported by ember.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytorch_lightning", reason="PyTorch Lightning is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "docs" / "gen_lightning_reference.py"
MAX_EXCLUSION_ENTRIES = 20


def _generator():
    spec = importlib.util.spec_from_file_location("ember_gen_lightning_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _generator()


@pytest.fixture(scope="module")
def table(gen):
    return gen.table()


def test_every_lightning_name_is_provided_or_excluded(table) -> None:
    rows, _stale = table
    missing = [f"{r.name}: {r.problem}" for r in rows if r.problem and r.exclusion is None]
    assert not missing, (
        f"{len(missing)} Lightning name(s) are neither provided by ember nor listed in tests/compat/exclusions.toml:\n  "
        + "\n  ".join(missing)
    )


def test_no_exclusion_is_stale(table) -> None:
    _rows, stale = table
    assert not stale, f"these exclusions cover no missing Lightning name any more; delete them from tests/compat/exclusions.toml: {stale}"


def test_exclusions_are_few_and_explained(gen) -> None:
    exclusions = gen.load_exclusions()
    assert len(exclusions) < MAX_EXCLUSION_ENTRIES, f"{len(exclusions)} exclusion entries; implement names instead of excluding them"
    for key, entry in exclusions.items():
        assert entry.get("reason") and entry.get("alternative"), f"exclusion {key!r} needs a reason and an ember alternative"


def test_table_covers_the_surface(table) -> None:
    rows, _ = table
    names = {r.name for r in rows}
    # A sample of each section, so that a broken introspection cannot pass by listing nothing.
    for expected in (
        "LightningModule.training_step",
        "LightningModule.on_gpu",
        "LightningDataModule.train_dataloader",
        "Trainer(max_epochs)",
        "Trainer(reload_dataloaders_every_n_epochs)",
        "Trainer.model",
        "Callback.on_train_batch_end",
        "callbacks.ModelCheckpoint",
        "callbacks.TQDMProgressBar(refresh_rate)",
        "loggers.MLFlowLogger",
        "strategies.ParallelStrategy",
        "profilers.SimpleProfiler",
        "utilities.rank_zero_only",
        "utilities.grad_norm",
        "seed_everything",
    ):
        assert expected in names
    assert len(rows) > 400


def test_compare_params_detects_mismatches(gen) -> None:
    def lightning(a, b=1, *, c=None): ...
    def same(a, b=1, *, c=None, extra=2): ...
    def renamed(a, bb=1, *, c=None): ...
    def other_default(a, b=2, *, c=None): ...

    assert gen.compare_params(lightning, same) == ""
    assert "no parameter `b`" in gen.compare_params(lightning, renamed)
    assert "`b` defaults to 2" in gen.compare_params(lightning, other_default)


def test_reference_page_is_current(gen) -> None:
    committed = gen.OUTPUT.read_text(encoding="utf-8") if gen.OUTPUT.exists() else ""
    assert committed == gen.render(), (
        "docs/reference/lightning-api.md is stale: run `python docs/gen_lightning_reference.py` and commit it."
    )
