"""Meta-tests: every hook is typed, documented, and actually fires."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import hookspecs
from ember.callback import Callback
from ember.module import Module
from ember.plugin_manager import _HOOK_NAMES

SPECS = {name: getattr(hookspecs, name) for name in sorted(_HOOK_NAMES)}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_is_typed_and_documented(name: str) -> None:
    spec = SPECS[name]
    signature = inspect.signature(spec)
    assert signature.return_annotation is not inspect.Signature.empty, f"{name} has no return annotation"
    for param in signature.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) is not annotated"
    doc = inspect.getdoc(spec) or ""
    assert len(doc) > 40, f"{name} needs a docstring saying when it fires"


@pytest.mark.parametrize("name", sorted(n for n in SPECS if n not in hookspecs.REGISTRATION_HOOKS))
def test_callback_base_mirrors_every_hook(name: str) -> None:
    spec_params = list(inspect.signature(SPECS[name]).parameters)
    method_params = list(inspect.signature(getattr(Callback, name)).parameters)[1:]
    assert method_params == spec_params, f"Callback.{name} must take {spec_params}"


def test_per_step_hooks_are_hooks() -> None:
    assert hookspecs.PER_STEP_HOOKS <= set(SPECS)


class _Everything(Callback):
    def __init__(self) -> None:
        self.seen: set[str] = set()


def _record(name: str) -> Any:
    def hook(self: _Everything, *args: Any) -> None:
        self.seen.add(name)

    return hook


for _name in SPECS:
    if _name not in hookspecs.REGISTRATION_HOOKS:
        setattr(_Everything, _name, _record(_name))


class _Logger(ember.Logger):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass


class _Tiny(Module):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams.fail:
            raise ValueError("planned failure")
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val", self.layer(batch[0]).mean())

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test", self.layer(batch[0]).mean())

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.layer(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_every_hook_fires(tmp_path: Any) -> None:
    """If a hook is added to hookspecs but the kernel never emits it, this fails."""
    recorder = _Everything()
    loader = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
    kwargs = dict(callbacks=[recorder], logger=[_Logger()], enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1, default_root_dir=tmp_path)
    trainer = ember.Trainer(max_epochs=1, **kwargs)
    trainer.fit(_Tiny(), loader, loader)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    trainer.validate(dataloaders=loader, verbose=False)
    trainer.test(dataloaders=loader, verbose=False)
    trainer.predict(dataloaders=loader)
    ember.Trainer(max_epochs=2, **kwargs).fit(_Tiny(), loader, ckpt_path=tmp_path / "a.ckpt")
    with pytest.raises(ValueError):
        ember.Trainer(max_epochs=1, **kwargs).fit(_Tiny(fail=True), loader)
    registry_seen = bool(trainer._registry.names("strategy"))  # register_roles fired for the built-ins
    assert registry_seen
    assert set(SPECS) - hookspecs.REGISTRATION_HOOKS - recorder.seen == set()
