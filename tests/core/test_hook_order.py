"""The exact order in which hooks fire for fit, validate, test and predict.

Two callbacks record every callback hook, a pluggy plugin records the same
hooks, and the module records its own hooks. Callbacks fire in list order,
then plugins, then the module.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callback import Callback
from ember.dispatch import MODULE_HOOKS
from ember.hookspecs import REGISTRATION_HOOKS
from ember.plugin_manager import _HOOK_NAMES

CALLBACK_HOOKS = sorted(n for n in _HOOK_NAMES if n not in REGISTRATION_HOOKS)


def _recording_callback(tag: str, log: list[str]) -> Callback:
    def make(name: str) -> Any:
        def hook(self: Any, trainer: Any, *args: Any) -> None:
            log.append(f"{tag}.{name}")

        return hook

    cls = type(f"Recorder{tag}", (Callback,), {n: make(n) for n in CALLBACK_HOOKS})
    return cls()


class _RecordingPlugin:
    """A plugin in pluggy's own style: hookimpl-marked functions."""

    def __init__(self, log: list[str]) -> None:
        for name in CALLBACK_HOOKS:
            setattr(self, name, ember.hookimpl(self._make(name, log)))

    @staticmethod
    def _make(name: str, log: list[str]) -> Any:
        def hook(trainer: Any) -> None:
            log.append(f"P.{name}")

        hook.__name__ = name
        return hook


class RecordingModule(ember.Module):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.record = log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.record.append("M.training_step")
        return self(batch[0]).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.record.append("M.validation_step")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.record.append("M.test_step")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self.record.append("M.predict_step")
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        self.record.append("M.configure_optimizers")
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _module_hook(name: str) -> Any:
    def hook(self: RecordingModule, *args: Any) -> None:
        self.record.append(f"M.{name}")

    return hook


for _name in MODULE_HOOKS:
    setattr(RecordingModule, _name, _module_hook(_name))


def _loader(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=1)


@pytest.fixture()
def run(tmp_path: Any) -> Any:
    def run(method: str, **kwargs: Any) -> list[str]:
        log: list[str] = []
        trainer = ember.Trainer(
            callbacks=[_recording_callback("A", log), _recording_callback("B", log)],
            plugins=[_RecordingPlugin(log)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            **kwargs,
        )
        module = RecordingModule(log)
        if method == "fit":
            trainer.fit(module, _loader(2), _loader(1))
        elif method == "predict":
            trainer.predict(module, _loader(1))
        else:
            getattr(trainer, method)(module, _loader(1), verbose=False)
        return log

    return run


def everyone(hook: str, module: bool = True) -> list[str]:
    return [f"A.{hook}", f"B.{hook}", f"P.{hook}"] + ([f"M.{hook}"] if module else [])


def _eval_run(prefix: str, step: str) -> list[str]:
    return [
        *everyone(f"on_{prefix}_start"),
        *everyone(f"on_{prefix}_epoch_start"),
        *everyone(f"on_{prefix}_batch_start"),
        f"M.{step}",
        *everyone(f"on_{prefix}_batch_end"),
        *everyone(f"on_{prefix}_epoch_end"),
        *everyone(f"on_{prefix}_end"),
    ]


def _train_batch() -> list[str]:
    return [
        *everyone("on_train_batch_start"),
        "M.training_step",
        *everyone("on_before_zero_grad"),
        *everyone("on_before_backward"),
        *everyone("on_after_backward"),
        *everyone("on_before_optimizer_step"),
        *everyone("on_train_batch_end"),
    ]


def test_fit_order(run: Any) -> None:
    expected = [
        *everyone("setup"),
        "M.configure_optimizers",
        *everyone("on_fit_start"),
        *everyone("on_sanity_check_start", module=False),
        *_eval_run("validation", "validation_step"),
        *everyone("on_sanity_check_end", module=False),
        *everyone("on_train_start"),
        *everyone("on_train_epoch_start"),
        *_train_batch(),
        *_train_batch(),
        *_eval_run("validation", "validation_step"),
        *everyone("on_train_epoch_end"),
        *everyone("on_train_end"),
        *everyone("on_fit_end"),
        *everyone("teardown"),
    ]
    assert run("fit", max_epochs=1, num_sanity_val_steps=1) == expected


def test_validate_order(run: Any) -> None:
    assert run("validate") == [*everyone("setup"), *_eval_run("validation", "validation_step"), *everyone("teardown")]


def test_test_order(run: Any) -> None:
    assert run("test") == [*everyone("setup"), *_eval_run("test", "test_step"), *everyone("teardown")]


def test_predict_order(run: Any) -> None:
    assert run("predict") == [*everyone("setup"), *_eval_run("predict", "predict_step"), *everyone("teardown")]


def test_checkpoint_hooks_order(tmp_path: Any) -> None:
    log: list[str] = []
    trainer = ember.Trainer(max_epochs=1, callbacks=[_recording_callback("A", log)], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    module = RecordingModule(log)
    trainer.fit(module, _loader(1))
    log.clear()
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert log == ["A.on_save_checkpoint", "M.on_save_checkpoint"]
    log.clear()
    ember.Trainer(max_epochs=2, callbacks=[_recording_callback("A", log)], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(
        RecordingModule(log), _loader(1), ckpt_path=tmp_path / "x.ckpt"
    )
    assert log.index("A.on_load_checkpoint") < log.index("M.on_load_checkpoint") < log.index("A.on_fit_start")
    assert log.index("A.setup") < log.index("A.on_load_checkpoint")


def test_exception_hooks(tmp_path: Any) -> None:
    log: list[str] = []

    class Boom(RecordingModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            raise RuntimeError("boom")

    trainer = ember.Trainer(max_epochs=1, callbacks=[_recording_callback("A", log)], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Boom(log), _loader(1))
    assert log[-2:] == ["A.on_exception", "A.teardown"] or log[-3:] == ["A.on_exception", "A.teardown", "M.teardown"]
    assert trainer.state.status == "failed"
