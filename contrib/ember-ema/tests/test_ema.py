"""EMA on real fits: the average matches one computed by hand from the weights
after every optimizer step, evaluation sees the average, and a resumed run
ends with exactly the average of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _ema_testing import Regressor, loaders, make_data, trainer
from ember_ema import EMA, load_ema_weights

import ember


class Recorder(ember.Callback):
    """Snapshots the weights at fit start and after every optimizer step.
    Listed before the EMA, so it sees each step first."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []
        self._last = None

    def on_fit_start(self, trainer, module):
        self._last = trainer.global_step
        self.snapshots.append((trainer.global_step, _weights(module)))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step != self._last:
            self._last = trainer.global_step
            self.snapshots.append((trainer.global_step, _weights(module)))


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def hand_ema(snapshots, decay: float, every: int = 1, start: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    """The average after each recorded step, computed the slow, obvious way."""
    step0, w0 = snapshots[0]
    ema = {k: v.clone() for k, v in w0.items()}
    out = {step0: {k: v.clone() for k, v in ema.items()}}
    for step, w in snapshots[1:]:
        if step <= start:
            ema = {k: v.clone() for k, v in w.items()}
        elif (step - start) % every == 0:
            ema = {k: (ema[k] * decay + w[k] * (1 - decay)) if w[k].is_floating_point() else w[k].clone() for k in w}
        out[step] = {k: v.clone() for k, v in ema.items()}
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool = False) -> None:
    assert set(a) == set(b)
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=k)


def ema_model(ema: EMA, module: Regressor) -> Regressor:
    copy = Regressor()
    copy.load_state_dict(ema.ema_state_dict(module))
    return copy.eval()


def val_loss_of(model: torch.nn.Module) -> torch.Tensor:
    (x, y) = make_data(16, seed=1).tensors
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(x), y)


@pytest.mark.parametrize(
    ("decay", "every", "start", "accumulate", "updates"),
    [
        (0.9, 1, 0, 1, 18),  # 6 steps per epoch, 3 epochs
        (0.7, 2, 2, 2, 3),  # 3 steps per epoch (accumulating 2 batches): updates at steps 4, 6, 8
        (0.95, 3, 0, 1, 6),
    ],
)
def test_average_matches_hand_computation(tmp_path: Path, decay, every, start, accumulate, updates) -> None:
    recorder, ema, module = Recorder(), EMA(decay=decay, update_every_n_steps=every, start_step=start), Regressor()
    train, val = loaders()
    t = trainer(tmp_path, [recorder, ema], max_epochs=3, accumulate_grad_batches=accumulate)
    t.fit(module, train, val)
    steps = [s for s, _ in recorder.snapshots]
    assert steps == list(range(0, 18 // accumulate + 1))
    expected = hand_ema(recorder.snapshots, decay, every, start)
    assert_same(ema.ema_tensors, expected[t.global_step])
    assert ema.num_updates == updates
    # the average is not the weights, and the module got its training weights back
    assert not torch.equal(ema.ema_tensors["net.0.weight"], module.net[0].weight)
    assert_same(_weights(module), recorder.snapshots[-1][1], exact=True)
    # the integer buffer is copied at each update, not averaged
    tracked = ema.ema_tensors["net.1.num_batches_tracked"]
    assert tracked.dtype == torch.long
    last_update = max(s for s in expected if s <= start or (s - start) % every == 0)
    assert int(tracked) == last_update * accumulate


def test_validation_sees_the_average(tmp_path: Path) -> None:
    recorder, ema, module = Recorder(), EMA(decay=0.8), Regressor()
    train, val = loaders()
    t = trainer(tmp_path, [recorder, ema], max_epochs=3)
    t.fit(module, train, val)
    expected = hand_ema(recorder.snapshots, 0.8)
    # one validation per epoch, after its 6th, 12th and 18th step
    assert len(module.val_weights_seen) == 3
    for seen, step in zip(module.val_weights_seen, (6, 12, 18), strict=True):
        assert_same(seen, expected[step])
    # the logged val_loss is the averaged model's loss, not the training weights'
    logged = t.callback_metrics["val_loss"]
    torch.testing.assert_close(logged, val_loss_of(ema_model(ema, module)), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(logged, val_loss_of(module.eval()), rtol=1e-4, atol=0)

    # trainer.test after fit uses the average too, and puts the weights back
    before = _weights(module)
    (result,) = t.test(module, dataloaders=val, verbose=False)
    assert result["test_loss"] == pytest.approx(float(val_loss_of(ema_model(ema, module))), rel=1e-5)
    assert_same(_weights(module), before, exact=True)


def test_use_for_validation_false_evaluates_training_weights(tmp_path: Path) -> None:
    recorder, ema, module = Recorder(), EMA(decay=0.8, use_for_validation=False), Regressor()
    train, val = loaders()
    trainer(tmp_path, [recorder, ema], max_epochs=2).fit(module, train, val)
    snapshots = dict(recorder.snapshots)
    assert_same(module.val_weights_seen[0], snapshots[6], exact=True)
    assert_same(module.val_weights_seen[1], snapshots[12], exact=True)


def test_swap_on_fit_end_leaves_the_average_in_the_module(tmp_path: Path) -> None:
    recorder, ema, module = Recorder(), EMA(decay=0.8, swap_on_fit_end=True), Regressor()
    train, val = loaders()
    trainer(tmp_path, [recorder, ema], max_epochs=2).fit(module, train, val)
    assert_same(_weights(module), hand_ema(recorder.snapshots, 0.8)[12])


def test_weights_come_back_when_validation_raises(tmp_path: Path) -> None:
    class Failing(Regressor):
        def validation_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    recorder, ema, module = Recorder(), EMA(decay=0.5), Failing()
    train, val = loaders()
    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path, [recorder, ema], max_epochs=2).fit(module, train, val)
    assert not ema.swapped_in
    assert_same(_weights(module), recorder.snapshots[-1][1], exact=True)


class SaveDuringValidation(ember.Callback):
    """Writes a checkpoint while the average is swapped in (once)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_validation_epoch_end(self, trainer, module):
        if not self.path.exists():
            trainer.save_checkpoint(self.path)


def test_checkpoint_holds_training_weights_and_the_average(tmp_path: Path) -> None:
    path = tmp_path / "during_val.ckpt"
    recorder, ema, module = Recorder(), EMA(decay=0.9, save_ema_state_dict=True), Regressor()
    train, val = loaders()
    trainer(tmp_path, [recorder, ema, SaveDuringValidation(path)], max_epochs=2).fit(module, train, val)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 6
    training_weights = dict(recorder.snapshots)[6]
    expected = hand_ema(recorder.snapshots, 0.9)[6]
    # the checkpoint's weights are the training weights, though it was written mid-validation
    assert_same(checkpoint["state_dict"], training_weights, exact=True)
    state = checkpoint["callbacks"][ema.state_key]
    assert_same(state["ema"], expected)
    assert state["num_updates"] == 6
    assert_same(checkpoint["ema_state_dict"], expected)
    # deployment: load the average into a fresh module, from either copy
    fresh = Regressor()
    load_ema_weights(fresh, path)
    assert_same(_weights(fresh), expected)
    del checkpoint["ema_state_dict"]
    other = Regressor()
    load_ema_weights(other, checkpoint)
    assert_same(_weights(other), expected)


def test_no_ema_state_dict_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    module, train, val = Regressor(), *loaders()
    t = trainer(tmp_path, [EMA()], max_epochs=1)
    t.fit(module, train, val)
    t.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert "ema_state_dict" not in checkpoint
    assert "EMA{decay=0.999}" in checkpoint["callbacks"]


class CrashAt(ember.Callback):
    """Saves a checkpoint after optimizer step ``step``, then raises (a crash)."""

    def __init__(self, step: int, path: Path, crash: bool = True) -> None:
        self.step, self.path, self.crash = step, path, crash

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and not self.path.exists():
            trainer.save_checkpoint(self.path)
            if self.crash:
                raise RuntimeError("simulated crash")


def _fit(tmp_path: Path, extra: list, ckpt_path=None, max_epochs: int = 4) -> tuple[EMA, Regressor]:
    ema, module = EMA(decay=0.8, update_every_n_steps=2, start_step=3), Regressor()
    train, val = loaders()
    trainer(tmp_path, [ema, *extra], max_epochs=max_epochs).fit(module, train, val, ckpt_path=ckpt_path)
    return ema, module


@pytest.mark.parametrize("save_at", [9, 12])  # in the middle of epoch 2; at the end of epoch 2
def test_resumed_average_equals_uninterrupted(tmp_path: Path, save_at: int) -> None:
    reference, reference_module = _fit(tmp_path / "a", [])

    path = tmp_path / "crash.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(tmp_path / "b", [CrashAt(save_at, path)])
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == save_at
    assert "EMA{decay=0.8}" in saved["callbacks"]

    resumed, resumed_module = _fit(tmp_path / "c", [], ckpt_path=str(path))
    assert resumed.num_updates == reference.num_updates
    assert_same(resumed.ema_tensors, reference.ema_tensors, exact=True)
    assert_same(_weights(resumed_module), _weights(reference_module), exact=True)


def test_resume_without_ema_state_starts_from_the_restored_weights(tmp_path: Path) -> None:
    path = tmp_path / "no_ema.ckpt"
    module, train, val = Regressor(), *loaders()
    trainer(tmp_path, [CrashAt(6, path, crash=False)], max_epochs=1).fit(module, train, val)
    recorder, ema = Recorder(), EMA(decay=0.5)
    t = trainer(tmp_path, [recorder, ema], max_epochs=2)
    t.fit(Regressor(), train, val, ckpt_path=str(path))
    assert recorder.snapshots[0][0] == 6
    assert_same(ema.ema_tensors, hand_ema(recorder.snapshots, 0.5)[12])


def test_restored_state_for_another_model_is_refused(tmp_path: Path) -> None:
    ema = EMA()
    ema.load_state_dict({"ema": {"weight": torch.zeros(3)}})
    train, val = loaders()
    with pytest.raises(ValueError, match="does not fit Regressor"):
        trainer(tmp_path, [ema], max_epochs=1).fit(Regressor(), train, val)


@pytest.mark.parametrize(
    "kwargs", [{"decay": 1.5}, {"decay": -0.1}, {"update_every_n_steps": 0}, {"start_step": -1}, {"update_every_n_steps": 1.5}]
)
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        EMA(**kwargs)
