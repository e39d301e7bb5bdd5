"""Checkpoints through the trainer: what a file holds, resuming a fit exactly,
loading into validate/test/predict, and every way a bad file is refused (with
the file named and left as it was)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import ember
from ember.checkpointing import CheckpointError
from ember.plugins.checkpoint_io.torch_io import CheckpointLoadError

DOCUMENTED_KEYS = {
    "ember_version",
    "epoch",
    "global_step",
    "state_dict",
    "loops",
    "optimizer_states",
    "lr_schedulers",
    "precision",
    "callbacks",
}


def _digest(path: Path) -> tuple[str, float]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime


class _Scheduled(ember.Module):
    """Adam and an epoch StepLR, so that resuming must restore both states."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])  # batches are (x, y); the default predict_step passes the whole batch

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=0.01)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)]


class _SaveAt(ember.Callback):
    def __init__(self, path: Path, epoch: int, batch: int | None = None) -> None:
        self.path, self.epoch, self.batch = path, epoch, batch

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.batch is not None and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if self.batch is None and trainer.current_epoch == self.epoch:
            trainer.save_checkpoint(self.path)


def _full_run(h: Any, make_trainer: Any, epochs: int = 4) -> tuple[_Scheduled, Any]:
    model = _Scheduled()
    trainer = make_trainer(max_epochs=epochs)
    trainer.fit(model, h.loader(32, 8))
    return model, trainer


@pytest.fixture
def trained_ckpt(h: Any, make_trainer: Any, tmp_path: Path) -> Path:
    trainer = make_trainer(max_epochs=1)
    trainer.fit(_Scheduled(), h.loader(16, 8))
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    return path


# --------------------------------------------------------------------------- contents
def test_saved_checkpoint_opens_with_weights_only_and_holds_documented_keys(trained_ckpt: Path) -> None:
    ckpt = torch.load(trained_ckpt, weights_only=True)
    assert DOCUMENTED_KEYS <= set(ckpt)
    assert ckpt["ember_version"] == ember.__version__
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 2)
    assert ckpt["loops"]["fit"]["global_step"] == 2
    assert set(ckpt["state_dict"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert len(ckpt["optimizer_states"]) == 1 and ckpt["optimizer_states"][0]["state"][0]["step"].item() == 2
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 1
    assert ckpt["hyper_parameters"] == {"width": 8}


def test_weights_only_checkpoint_has_no_training_state(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    trainer = make_trainer(max_epochs=1)
    trainer.fit(_Scheduled(), h.loader(16, 8))
    trainer.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    ckpt = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert {"state_dict", "epoch", "global_step", "hyper_parameters"} <= set(ckpt)
    assert not {"optimizer_states", "lr_schedulers", "callbacks"} & set(ckpt)


def test_callback_state_is_saved_and_restored(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    class Stateful(ember.Callback):
        def __init__(self) -> None:
            self.batches = 0
            self.loaded: dict[str, Any] | None = None

        def on_train_batch_end(self, *args: Any) -> None:
            self.batches += 1

        def state_dict(self) -> dict[str, Any]:
            return {"batches": self.batches}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.loaded = state
            self.batches = state["batches"]

    first = Stateful()
    trainer = make_trainer(max_epochs=1, callbacks=[first])
    trainer.fit(_Scheduled(), h.loader(32, 8))
    trainer.save_checkpoint(tmp_path / "cb.ckpt")
    key = type(first).__qualname__
    assert key.endswith("Stateful") and first.state_key == key
    assert torch.load(tmp_path / "cb.ckpt", weights_only=True)["callbacks"] == {key: {"batches": 4}}
    second = Stateful()
    make_trainer(max_epochs=2, callbacks=[second]).fit(_Scheduled(), h.loader(32, 8), ckpt_path=tmp_path / "cb.ckpt")
    assert second.loaded == {"batches": 4} and second.batches == 8


def test_save_checkpoint_without_a_module_is_an_error(make_trainer: Any, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="needs a module"):
        make_trainer().save_checkpoint(tmp_path / "x.ckpt")


# --------------------------------------------------------------------------- resuming
def test_resume_after_fit_continues_to_the_same_weights(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    full, full_trainer = _full_run(h, make_trainer)
    first = _Scheduled()
    t1 = make_trainer(max_epochs=2)
    t1.fit(first, h.loader(32, 8))
    path = tmp_path / "half.ckpt"
    t1.save_checkpoint(path)
    seen: list[tuple[int, int]] = []

    class Where(ember.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            seen.append((trainer.current_epoch, trainer.global_step))

    resumed = _Scheduled()
    t2 = make_trainer(max_epochs=4, callbacks=[Where()])
    t2.fit(resumed, h.loader(32, 8), ckpt_path=str(path))
    assert seen == [(2, 8), (3, 12)]
    assert (t2.global_step, t2.current_epoch) == (full_trainer.global_step, full_trainer.current_epoch) == (16, 4)
    assert h.same(h.params_of(resumed), h.params_of(full))
    assert t2.optimizers[0].param_groups[0]["lr"] == pytest.approx(full_trainer.optimizers[0].param_groups[0]["lr"])
    assert torch.equal(t2.optimizers[0].state_dict()["state"][0]["exp_avg"], full_trainer.optimizers[0].state_dict()["state"][0]["exp_avg"])


def test_resume_from_an_epoch_end_checkpoint(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    full, _ = _full_run(h, make_trainer)
    path = tmp_path / "epoch1.ckpt"
    make_trainer(max_epochs=4, callbacks=[_SaveAt(path, epoch=1)]).fit(_Scheduled(), h.loader(32, 8))
    ckpt = torch.load(path, weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 8)
    resumed = _Scheduled()
    trainer = make_trainer(max_epochs=4)
    trainer.fit(resumed, h.loader(32, 8), ckpt_path=path)
    assert trainer.global_step == 16
    assert h.same(h.params_of(resumed), h.params_of(full))


def test_resume_from_the_middle_of_an_epoch(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    full, _ = _full_run(h, make_trainer, epochs=2)
    path = tmp_path / "mid.ckpt"
    make_trainer(max_epochs=2, callbacks=[_SaveAt(path, epoch=0, batch=1)]).fit(_Scheduled(), h.loader(32, 8))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["loops"]["fit"]["batches_done"] == 2
    resumed = _Scheduled()
    trainer = make_trainer(max_epochs=2)
    trainer.fit(resumed, h.loader(32, 8), ckpt_path=path)
    assert trainer.global_step == 8
    assert h.same(h.params_of(resumed), h.params_of(full))


def test_weights_only_checkpoint_cannot_resume_but_loads(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    model = _Scheduled()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, h.loader(16, 8))
    path = tmp_path / "weights.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    with pytest.raises(CheckpointError, match="weights.ckpt.*weights only.*load_from_checkpoint"):
        make_trainer(max_epochs=2).fit(_Scheduled(), h.loader(16, 8), ckpt_path=path)
    loaded = _Scheduled.load_from_checkpoint(str(path))
    assert h.same(h.params_of(loaded), h.params_of(model))
    [metrics] = make_trainer().validate(_Scheduled(), h.loader(16, 8), ckpt_path=path, verbose=False)
    [expected] = make_trainer().validate(model, h.loader(16, 8), verbose=False)
    assert metrics == expected


def test_ckpt_path_in_validate_test_and_predict_loads_the_weights(h: Any, make_trainer: Any, trained_ckpt: Path) -> None:
    trained = _Scheduled.load_from_checkpoint(str(trained_ckpt))
    data = h.loader(16, 8)
    [val] = make_trainer().validate(_Scheduled(), data, ckpt_path=trained_ckpt, verbose=False)
    [test] = make_trainer().test(_Scheduled(), data, ckpt_path=str(trained_ckpt), verbose=False)
    preds = make_trainer().predict(_Scheduled(), data, ckpt_path=str(trained_ckpt))
    [val_ref] = make_trainer().validate(trained, data, verbose=False)
    assert val == val_ref and test["test_loss"] == val_ref["val_loss"]
    with torch.no_grad():
        assert torch.equal(torch.cat(preds), trained(data.dataset.tensors[0]))
    fresh = _Scheduled()
    [val_fresh] = make_trainer().validate(fresh, data, verbose=False)
    assert val_fresh != val_ref  # the checkpoint made the difference


def test_ckpt_path_last_without_any_checkpoint_starts_from_scratch(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_epochs=1)
    with pytest.warns(UserWarning, match="no checkpoint found"):
        trainer.fit(_Scheduled(), h.loader(16, 8), ckpt_path="last")
    assert trainer.global_step == 2
    with pytest.raises(ValueError, match="ckpt_path='best'.*no best checkpoint"):
        trainer.validate(_Scheduled(), h.loader(16, 8), ckpt_path="best")


# --------------------------------------------------------------------------- refusing bad files
def test_missing_file(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        make_trainer(max_epochs=1).fit(_Scheduled(), h.loader(16, 8), ckpt_path=tmp_path / "nowhere.ckpt")


def test_truncated_file(h: Any, make_trainer: Any, trained_ckpt: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated.ckpt"
    data = trained_ckpt.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    before = _digest(broken)
    with pytest.raises(CheckpointLoadError, match="truncated.ckpt.*truncated, corrupted or not a torch checkpoint"):
        make_trainer(max_epochs=2).fit(_Scheduled(), h.loader(16, 8), ckpt_path=broken)
    with pytest.raises(CheckpointLoadError, match="truncated.ckpt"):
        _Scheduled.load_from_checkpoint(str(broken))
    assert _digest(broken) == before


def test_file_that_is_not_a_checkpoint(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointLoadError, match="notes.ckpt"):
        make_trainer().validate(_Scheduled(), h.loader(16, 8), ckpt_path=text)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(2), "step": 3}, other)
    before = _digest(other)
    with pytest.raises(CheckpointError, match="other.ckpt.*not an ember checkpoint.*no 'state_dict'.*weights, step"):
        make_trainer(max_epochs=1).fit(_Scheduled(), h.loader(16, 8), ckpt_path=other)
    with pytest.raises(CheckpointError, match="other.ckpt"):
        _Scheduled.load_from_checkpoint(str(other))
    assert _digest(other) == before
    listed = tmp_path / "list.ckpt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointLoadError, match="list.ckpt.*holds a list"):
        _Scheduled.load_from_checkpoint(str(listed))


def test_checkpoint_of_a_different_model(h: Any, make_trainer: Any, trained_ckpt: Path) -> None:
    before = _digest(trained_ckpt)

    class Renamed(_Scheduled):
        def __init__(self, width: int = 8) -> None:
            super().__init__(width)
            self.extra = torch.nn.Linear(1, 1)
            self.net[2] = torch.nn.Identity()

    with pytest.raises(
        CheckpointError,
        match=r"trained.ckpt.*does not fit Renamed: missing keys: extra.weight, extra.bias; unexpected keys: net.2.weight, net.2.bias",
    ):
        make_trainer(max_epochs=2).fit(Renamed(), h.loader(16, 8), ckpt_path=trained_ckpt)
    with pytest.raises(CheckpointError, match=r"trained.ckpt.*shape mismatches: net.0.weight: checkpoint \(8, 4\) vs module \(3, 4\)"):
        make_trainer().test(_Scheduled(width=3), h.loader(16, 8), ckpt_path=trained_ckpt, verbose=False)
    assert _digest(trained_ckpt) == before


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(str(marker))}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointLoadError, match="Refused to load .*evil.ckpt"):
        make_trainer(max_epochs=1).fit(_Scheduled(), h.loader(16, 8), ckpt_path=evil)
    with pytest.raises(CheckpointLoadError, match="evil.ckpt"):
        _Scheduled.load_from_checkpoint(str(evil))
    with pytest.raises(CheckpointLoadError, match="evil.ckpt"):
        make_trainer().predict(_Scheduled(), h.loader(16, 8), ckpt_path=evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "version,match",
    [("1.0.0", "written by ember 1.0.0"), ("0.0.1", "written by ember 0.0.1"), ("banana", "unreadable ember version 'banana'")],
)
def test_incompatible_versions(h: Any, make_trainer: Any, trained_ckpt: Path, tmp_path: Path, version: str, match: str) -> None:
    ckpt = torch.load(trained_ckpt, weights_only=True)
    ckpt["ember_version"] = version
    path = tmp_path / "versioned.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=f"versioned.ckpt.*{match}"):
        make_trainer(max_epochs=2).fit(_Scheduled(), h.loader(16, 8), ckpt_path=path)


def test_foreign_checkpoint_with_a_state_dict_loads_weights(h: Any, make_trainer: Any, tmp_path: Path) -> None:
    source = _Scheduled()
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(0.25)
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = _Scheduled.load_from_checkpoint(str(path))
    assert all(torch.all(p == 0.25) for p in loaded.parameters())
    data = h.loader(8, 8)
    [preds] = make_trainer().predict(_Scheduled(), data, ckpt_path=path)
    with torch.no_grad():
        assert torch.equal(preds, loaded(data.dataset.tensors[0]))
