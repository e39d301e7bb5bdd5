"""``ember.testing.assert_survives_resume``: a callback's or plugin's state
comes back from a checkpoint and the run carries on (served through
:mod:`ember.testing`)."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ember.callback import Callback


@dataclass
class ResumeReport:
    """What :func:`assert_survives_resume` saw, for further assertions."""

    checkpoint_path: Path
    saved_state: dict[str, Any]
    restored_state: dict[str, Any]
    saved_step: int
    resumed_step: int
    final_step: int
    first: Any = field(repr=False)  # the instance of the first run
    second: Any = field(repr=False)  # the fresh instance of the resumed run


class _ResumeProbe(Callback):
    """Fires first in the resumed run: copies the fresh instance's state as
    restored, before anything trains."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.restored: dict[str, Any] | None = None
        self.step_at_start: int | None = None
        self.first_batch_step: int | None = None

    @property
    def state_key(self) -> str:
        return "ember.testing:_ResumeProbe"

    def on_fit_start(self, trainer: Any, module: Any) -> None:
        self.restored = copy.deepcopy(self.target.state_dict())
        self.step_at_start = trainer.global_step

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if self.first_batch_step is None:
            self.first_batch_step = trainer.global_step


def state_difference(saved: Any, restored: Any, where: str = "state") -> str | None:
    """Where ``restored`` differs from ``saved`` (``"state['best']: 0.5 != inf"``), or ``None``."""
    if isinstance(saved, dict) and isinstance(restored, dict):
        if set(saved) != set(restored):
            missing, extra = sorted(map(str, set(saved) - set(restored))), sorted(map(str, set(restored) - set(saved)))
            return f"{where}: keys differ (missing after resume: {missing or 'none'}; new after resume: {extra or 'none'})"
        for key in saved:
            found = state_difference(saved[key], restored[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(saved, (list, tuple)) and isinstance(restored, (list, tuple)):
        if len(saved) != len(restored):
            return f"{where}: length {len(saved)} saved, {len(restored)} after resume"
        for i, (a, b) in enumerate(zip(saved, restored, strict=True)):
            found = state_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(saved, torch.Tensor) or isinstance(restored, torch.Tensor):
        if not (isinstance(saved, torch.Tensor) and isinstance(restored, torch.Tensor)):
            return f"{where}: {type(saved).__name__} saved, {type(restored).__name__} after resume"
        if saved.shape != restored.shape or saved.dtype != restored.dtype:
            return f"{where}: {saved.dtype}{list(saved.shape)} saved, {restored.dtype}{list(restored.shape)} after resume"
        a, b = saved.detach().cpu(), restored.detach().cpu()
        same = torch.equal(a, b) or (
            a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
        )
        return None if same else f"{where}: tensor values differ"
    if isinstance(saved, float) and isinstance(restored, float) and math.isnan(saved) and math.isnan(restored):
        return None
    if saved != restored:
        return f"{where}: {saved!r} saved, {restored!r} after resume"
    return None


def assert_survives_resume(
    factory: Callable[[], Any],
    make_trainer: Callable[..., Any],
    module_factory: Callable[[], Any] | None = None,
    *,
    datamodule_factory: Callable[[], Any] | None = None,
    first_epochs: int = 1,
    total_epochs: int = 2,
    allow_empty_state: bool = False,
    checkpoint_name: str = "survives_resume.ckpt",
    **trainer_kwargs: Any,
) -> ResumeReport:
    """Fit with an instance from ``factory`` (a Callback, or a plugin object
    whose state travels through ``on_save_checkpoint``/``on_load_checkpoint``)
    for ``first_epochs``, save a checkpoint, then resume to ``total_epochs``
    in a fresh trainer with a fresh instance, and assert that

    * the fresh instance's ``state_dict()`` at the start of the resumed run
      equals the first instance's when the checkpoint was saved;
    * the resumed run starts at the saved ``global_step`` and trains on.

    ``make_trainer(**kwargs)`` builds each trainer (the ``make_trainer``
    fixture); ``trainer_kwargs`` go to both. Returns a :class:`ResumeReport`.
    """
    if total_epochs <= first_epochs:
        raise ValueError(f"total_epochs ({total_epochs}) must exceed first_epochs ({first_epochs}) for the resumed run to train.")
    from ember._testing_support import TinyModule  # (it serves this module's names)

    module_factory = module_factory or TinyModule
    extra_callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    extra_plugins = list(trainer_kwargs.pop("plugins", None) or [])

    def run(instance: Any, epochs: int, probe: _ResumeProbe | None = None, ckpt_path: Path | None = None) -> Any:
        callbacks = [probe] if probe is not None else []
        plugins = list(extra_plugins)
        if isinstance(instance, Callback):
            callbacks.append(instance)
        else:
            plugins.append(instance)
        trainer = make_trainer(max_epochs=epochs, callbacks=[*callbacks, *extra_callbacks], plugins=plugins or None, **trainer_kwargs)
        datamodule = datamodule_factory() if datamodule_factory is not None else None
        trainer.fit(module_factory(), datamodule=datamodule, ckpt_path=os.fspath(ckpt_path) if ckpt_path else None)
        return trainer

    first = factory()
    if not callable(getattr(first, "state_dict", None)):
        raise TypeError(f"{type(first).__name__} has no state_dict(); assert_survives_resume checks state that survives a resume.")
    trainer = run(first, first_epochs)
    path = Path(trainer.default_root_dir) / checkpoint_name
    trainer.save_checkpoint(path)
    saved = copy.deepcopy(first.state_dict())
    saved_step = trainer.global_step
    if not saved and not allow_empty_state:
        raise AssertionError(
            f"{type(first).__name__}.state_dict() is empty after {first_epochs} epoch(s): there is nothing to survive a resume. "
            "Return the state from state_dict() (and restore it in load_state_dict()), or pass allow_empty_state=True."
        )
    if saved_step == 0:
        raise AssertionError(
            "the first run took no optimizer step, so a resume cannot be told from a fresh start; give it data to train on."
        )

    second = factory()
    if second is first:
        raise AssertionError("the factory returned the same instance twice; it must create a fresh one (pass the class, or a lambda).")
    probe = _ResumeProbe(second)
    resumed = run(second, total_epochs, probe, path)
    restored = probe.restored if probe.restored is not None else {}
    difference = state_difference(saved, restored)
    if difference:
        raise AssertionError(
            f"{type(second).__name__} did not get its state back from the checkpoint: {difference}. "
            "Does load_state_dict() restore everything state_dict() returns"
            + (" (and is state_key the same for both instances)?" if isinstance(second, Callback) else " (through on_load_checkpoint)?")
        )
    if probe.step_at_start != saved_step:
        raise AssertionError(f"the resumed run started at global_step {probe.step_at_start}, not at the saved {saved_step}.")
    if probe.first_batch_step is None or resumed.global_step <= saved_step:
        raise AssertionError(
            f"the resumed run did not train on (global_step {resumed.global_step} after resuming from {saved_step}); "
            f"did {type(second).__name__} stop it?"
        )
    return ResumeReport(path, saved, restored, saved_step, probe.step_at_start, resumed.global_step, first, second)
