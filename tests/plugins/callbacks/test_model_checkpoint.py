"""ModelCheckpoint against a real fit: which files exist, what they hold, and
which one is "best" for metric values the test dictates."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from ember.plugins.callbacks import ModelCheckpoint
from ember.plugins.callbacks.model_checkpoint import MissingMetricError
from ember.plugins.loggers import CSVLogger

SCORES = [0.5, 0.2, 0.9, 0.1, 0.3]  # "score" logged by validation, per epoch


def ckpts(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".ckpt")) if os.path.isdir(directory) else []


def load(path) -> dict:
    return torch.load(path, weights_only=True)


def test_default_keeps_the_latest_under_log_dir(tmp_path, make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=3, enable_checkpointing=True, logger=CSVLogger(tmp_path))
    model = regressor()
    trainer.fit(model, *loaders)
    cb = trainer.checkpoint_callback
    assert isinstance(cb, ModelCheckpoint)
    expected_dir = os.path.join(str(tmp_path), "ember_logs", "version_0", "checkpoints")
    assert cb.dirpath == expected_dir
    assert ckpts(expected_dir) == ["epoch=2-step=12.ckpt"]
    assert cb.best_model_path == os.path.join(expected_dir, "epoch=2-step=12.ckpt")
    ckpt = load(cb.best_model_path)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 12
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ckpt["state_dict"][name], value)
    assert "optimizer_states" in ckpt


@pytest.mark.parametrize(
    ("mode", "kept", "best"),
    [
        ("min", ["epoch=1-score=0.20.ckpt", "epoch=3-score=0.10.ckpt"], "epoch=3-score=0.10.ckpt"),
        ("max", ["epoch=0-score=0.50.ckpt", "epoch=2-score=0.90.ckpt"], "epoch=2-score=0.90.ckpt"),
    ],
)
def test_top_k_by_monitored_metric(tmp_path, make_trainer, regressor, loaders, mode, kept, best):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}-{score:.2f}", monitor="score", mode=mode, save_top_k=2)
    trainer = make_trainer(max_epochs=5, callbacks=[cb])
    trainer.fit(regressor(val_scores=SCORES), *loaders)
    assert ckpts(tmp_path / "ck") == kept
    assert os.path.basename(cb.best_model_path) == best
    assert float(cb.best_model_score) == pytest.approx(min(SCORES) if mode == "min" else max(SCORES))
    assert {os.path.basename(p): round(float(s), 4) for p, s in cb.best_k_models.items()} == {
        n: float(n.split("score=")[1][:-5]) for n in kept
    }
    worst = max if mode == "min" else min
    assert os.path.basename(cb.kth_best_model_path) == worst(kept, key=lambda n: float(n.split("score=")[1][:-5]))
    # each file holds the epoch its name says, and the callback state it had when written
    for name in kept:
        ckpt = load(tmp_path / "ck" / name)
        assert ckpt["epoch"] == int(name.split("-")[0].split("=")[1])
        assert ckpt["callbacks"][cb.state_key]["best_model_path"] in {os.path.join(str(tmp_path / "ck"), n) for n in kept} | {
            cb.best_model_path
        }


def test_keep_all_keep_none_and_last(tmp_path, make_trainer, regressor, loaders):
    every = ModelCheckpoint(dirpath=tmp_path / "all", monitor="score", save_top_k=-1)
    none = ModelCheckpoint(dirpath=tmp_path / "none", monitor="score", save_top_k=0, save_last=True)
    trainer = make_trainer(max_epochs=5, callbacks=[every, none])
    trainer.fit(regressor(val_scores=SCORES), *loaders)
    assert ckpts(tmp_path / "all") == [f"epoch={e}-step={4 * (e + 1)}.ckpt" for e in range(5)]
    assert os.path.basename(every.best_model_path) == "epoch=3-step=16.ckpt"
    assert ckpts(tmp_path / "none") == ["last.ckpt"]
    assert none.last_model_path == str(tmp_path / "none" / "last.ckpt") and none.best_model_path == ""
    assert load(none.last_model_path)["global_step"] == 20


def test_without_monitor_keeps_latest_k(tmp_path, make_trainer, regressor, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, save_top_k=2, auto_insert_metric_name=False, filename="e{epoch}")
    make_trainer(max_epochs=4, callbacks=[cb]).fit(regressor(), *loaders)
    assert ckpts(tmp_path) == ["e2.ckpt", "e3.ckpt"]
    assert cb.best_model_path == str(tmp_path / "e3.ckpt")


def test_every_n_train_steps(tmp_path, make_trainer, regressor, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, save_last=True)
    make_trainer(max_epochs=2, callbacks=[cb]).fit(regressor(), *loaders)
    # 8 steps: saved at steps 3 and 6 only (no epoch-end top-k files); last.ckpt follows the latest save
    assert ckpts(tmp_path) == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt", "last.ckpt"]
    assert load(tmp_path / "last.ckpt")["global_step"] == 8


def test_every_n_epochs(tmp_path, make_trainer, regressor, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=2, save_top_k=-1)
    make_trainer(max_epochs=5, callbacks=[cb]).fit(regressor(), *loaders)
    assert ckpts(tmp_path) == ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt"]


def test_mid_epoch_validation_saves_each_time_and_sanity_check_never(tmp_path, make_trainer, regressor, loaders):
    latest = ModelCheckpoint(dirpath=tmp_path / "latest", save_top_k=-1)
    best = ModelCheckpoint(dirpath=tmp_path / "best", monitor="val_loss", save_top_k=-1)
    make_trainer(max_epochs=1, val_check_interval=2, num_sanity_val_steps=2, callbacks=[latest, best]).fit(regressor(), *loaders)
    assert ckpts(tmp_path / "latest") == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]
    assert ckpts(tmp_path / "best") == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]


def test_no_validation_saves_at_train_epoch_end(tmp_path, make_trainer, train_only, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="train_loss", save_top_k=1, filename="{epoch}")
    make_trainer(max_epochs=3, callbacks=[cb]).fit(train_only(), loaders[0])
    assert len(ckpts(tmp_path)) == 1 and cb.best_model_score is not None
    assert ckpts(tmp_path)[0] in {"epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"}


def test_no_validation_ranks_on_epoch_level_train_metric(tmp_path, make_trainer, train_only, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="train_score", mode="max", save_top_k=1, filename="{epoch}-{train_score:.1f}")
    make_trainer(max_epochs=4, callbacks=[cb]).fit(train_only(train_scores=[0.1, 0.7, 0.3, 0.2]), loaders[0])
    assert ckpts(tmp_path) == ["epoch=1-train_score=0.7.ckpt"]


def test_missing_metric_error_lists_what_is_there(tmp_path, make_trainer, regressor, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_los")
    with pytest.raises(MissingMetricError) as info:
        make_trainer(max_epochs=1, callbacks=[cb]).fit(regressor(), *loaders)
    message = str(info.value)
    assert "'val_los'" in message and "Did you mean 'val_loss'?" in message and "'train_loss'" in message
    assert ckpts(tmp_path) == []


def test_weights_only(tmp_path, make_trainer, regressor, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    make_trainer(max_epochs=1, callbacks=[cb]).fit(regressor(), *loaders)
    ckpt = load(cb.best_model_path)
    assert "state_dict" in ckpt and "optimizer_states" not in ckpt


def test_never_deletes_files_it_did_not_write(tmp_path, make_trainer, regressor, loaders):
    (tmp_path / "keep.ckpt").write_bytes(b"user file")
    (tmp_path / "epoch=0-step=4.ckpt").write_bytes(b"earlier run")
    cb = ModelCheckpoint(dirpath=tmp_path, save_top_k=1)
    make_trainer(max_epochs=3, callbacks=[cb]).fit(regressor(), *loaders)
    assert ckpts(tmp_path) == ["epoch=0-step=4.ckpt", "epoch=2-step=12.ckpt", "keep.ckpt"]
    assert (tmp_path / "epoch=0-step=4.ckpt").read_bytes() == b"earlier run", "a name clash gets a -v1 file instead"
    assert (tmp_path / "keep.ckpt").read_bytes() == b"user file"


def test_versioned_name_on_clash(tmp_path, make_trainer, regressor, loaders):
    (tmp_path / "epoch=0-step=4.ckpt").write_bytes(b"earlier run")
    cb = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1)
    make_trainer(max_epochs=2, callbacks=[cb]).fit(regressor(), *loaders)
    assert ckpts(tmp_path) == ["epoch=0-step=4-v1.ckpt", "epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]


def test_removes_old_file_only_after_the_new_one_is_written(tmp_path, make_trainer, regressor, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="score", save_top_k=1)
    trainer = make_trainer(max_epochs=5, callbacks=[cb])
    removed = []
    original = trainer.strategy.remove_checkpoint

    def spy(path):
        removed.append((os.path.basename(path), ckpts(tmp_path)))
        original(path)

    trainer.strategy.remove_checkpoint = spy
    trainer.fit(regressor(val_scores=SCORES), *loaders)
    # improvements at epochs 1 and 3: each time the new best exists before the old one goes
    assert removed == [
        ("epoch=0-step=4.ckpt", ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]),
        ("epoch=1-step=8.ckpt", ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt"]),
    ]


def test_state_is_saved_and_resumed(tmp_path, make_trainer, regressor, loaders):
    first = ModelCheckpoint(dirpath=tmp_path, monitor="score", save_top_k=2, save_last=True)
    make_trainer(max_epochs=3, callbacks=[first]).fit(regressor(val_scores=[0.5, 0.2, 0.9, 0.8, 0.7]), *loaders)
    assert ckpts(tmp_path) == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"]
    ckpt = load(tmp_path / "last.ckpt")
    state = ckpt["callbacks"]["ModelCheckpoint{'monitor': 'score', 'mode': 'min'}"]
    assert state["best_model_path"] == str(tmp_path / "epoch=1-step=8.ckpt")
    assert state["best_model_score"] == pytest.approx(0.2)
    assert state["last_model_path"] == str(tmp_path / "last.ckpt")

    second = ModelCheckpoint(dirpath=tmp_path, monitor="score", save_top_k=2, save_last=True)
    trainer = make_trainer(max_epochs=5, callbacks=[second])
    trainer.fit(regressor(val_scores=[0.5, 0.2, 0.9, 0.8, 0.3]), *loaders, ckpt_path=str(tmp_path / "last.ckpt"))
    # epoch 3 (0.8) is worse than both restored records; epoch 4 (0.3) replaces epoch 0 (0.5) in the top 2
    assert os.path.basename(second.best_model_path) == "epoch=1-step=8.ckpt"
    assert float(second.best_model_score) == pytest.approx(0.2)
    assert sorted(os.path.basename(p) for p in second.best_k_models) == ["epoch=1-step=8.ckpt", "epoch=4-step=20.ckpt"]
    # the file the first run wrote is no longer tracked, but this run did not write it, so it stays
    assert ckpts(tmp_path) == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "epoch=4-step=20.ckpt", "last.ckpt"]
    assert load(tmp_path / "last.ckpt")["global_step"] == 20


def test_resumed_run_keeps_writing_to_the_same_default_directory(tmp_path, make_trainer, regressor, loaders):
    first = make_trainer(max_epochs=2, enable_checkpointing=True, logger=CSVLogger(tmp_path))
    first.fit(regressor(), *loaders)
    ckpt_dir = os.path.join(str(tmp_path), "ember_logs", "version_0", "checkpoints")
    assert first.checkpoint_callback.dirpath == ckpt_dir
    last = first.checkpoint_callback.best_model_path

    second = make_trainer(max_epochs=3, enable_checkpointing=True, logger=CSVLogger(tmp_path))
    second.fit(regressor(), *loaders, ckpt_path=last)
    assert second.checkpoint_callback.dirpath == ckpt_dir
    # A resumed run is the same run: its restored top-k bookkeeping owns the
    # earlier file, so save_top_k=1 keeps only the newest one.
    assert ckpts(ckpt_dir) == ["epoch=2-step=12.ckpt"]


def test_ckpt_path_best_uses_best_model_path(tmp_path, make_trainer, regressor, loaders):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="score", save_top_k=1)
    trainer = make_trainer(max_epochs=5, callbacks=[cb])
    model = regressor(val_scores=SCORES)
    trainer.fit(model, *loaders)
    best = load(cb.best_model_path)["state_dict"]
    trainer.test(model, loaders[1], ckpt_path="best", verbose=False)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, best[name])


def test_format_checkpoint_name(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, filename="{epoch:03d}-{val/acc:.3f}-{missing}")
    with pytest.warns(UserWarning, match="missing"):
        path = cb.format_checkpoint_name({"epoch": 7, "step": 3, "val/acc": torch.tensor(0.98765)})
    assert path == os.path.join(str(tmp_path), "epoch=007-val_acc=0.988-missing=0.ckpt")
    plain = ModelCheckpoint(dirpath=tmp_path, filename="best", auto_insert_metric_name=False)
    assert plain.format_checkpoint_name({"epoch": 1}, ver=2) == os.path.join(str(tmp_path), "best-v2.ckpt")


def test_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint(mode="mni")
    with pytest.raises(ValueError, match="save_top_k"):
        ModelCheckpoint(save_top_k=-2)
    with pytest.raises(ValueError, match="mutually exclusive"):
        ModelCheckpoint(every_n_train_steps=2, every_n_epochs=1)
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="directory"):
        ModelCheckpoint(dirpath=tmp_path / "f")


def test_state_key_includes_monitor_and_mode():
    assert ModelCheckpoint(monitor="a", mode="max").state_key != ModelCheckpoint(monitor="a").state_key
    assert "'a'" in ModelCheckpoint(monitor="a").state_key


def test_load_state_dict_round_trip(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="m")
    cb.best_k_models = {str(tmp_path / "a.ckpt"): torch.tensor(0.5), str(tmp_path / "b.ckpt"): torch.tensor(0.25)}
    cb.best_model_path, cb.best_model_score = str(tmp_path / "b.ckpt"), torch.tensor(0.25)
    cb.kth_best_model_path, cb.kth_value = str(tmp_path / "a.ckpt"), torch.tensor(0.5)
    cb.last_model_path = str(tmp_path / "last.ckpt")
    state = cb.state_dict()
    other = ModelCheckpoint(dirpath=tmp_path, monitor="m")
    other.load_state_dict(state)
    assert other.state_dict() == state


@pytest.mark.parametrize("restore_first", [True, False], ids=["restore-then-setup", "setup-then-restore"])
def test_restored_records_are_matched_by_name_in_this_runs_directory(tmp_path, restore_first):
    from ember import Trainer

    trainer = Trainer(default_root_dir=tmp_path / "new_version", logger=False)  # its log_dir: the root dir
    assert trainer.log_dir == str(tmp_path / "new_version")
    saved = ModelCheckpoint(dirpath=tmp_path / "old", monitor="m")
    saved.best_k_models = {str(tmp_path / "old" / "a.ckpt"): torch.tensor(0.5), str(tmp_path / "old" / "b.ckpt"): torch.tensor(0.7)}
    saved.best_model_path, saved.best_model_score = str(tmp_path / "old" / "a.ckpt"), torch.tensor(0.5)
    saved.last_model_path = str(tmp_path / "old" / "last.ckpt")
    state = saved.state_dict()

    def run(cb):
        steps = [lambda: cb.load_state_dict(state), lambda: cb.setup(trainer, None, "fit")]
        for step in steps if restore_first else steps[::-1]:
            step()

    # The run directory was moved: its files are found by name where this run writes.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.ckpt").write_bytes(b"")
    moved = ModelCheckpoint(dirpath=tmp_path / "elsewhere", monitor="m")
    with pytest.warns(UserWarning, match="matched by file name"):
        run(moved)
    assert moved.dirpath == str(tmp_path / "elsewhere")
    assert moved.best_k_models == {str(tmp_path / "elsewhere" / "a.ckpt"): torch.tensor(0.5, dtype=torch.float64)}
    assert moved.best_model_path == str(tmp_path / "elsewhere" / "a.ckpt") and float(moved.best_model_score) == 0.5
    assert moved.last_model_path == ""  # no last.ckpt there

    default = ModelCheckpoint(monitor="m")  # no dirpath of its own: the run's configuration decides, not the checkpoint
    with pytest.warns(UserWarning, match="this run writes to"):
        run(default)
    assert default.dirpath == str(tmp_path / "new_version" / "checkpoints")
    assert default.best_model_path == "" and default.best_k_models == {} and default.best_model_score is None


def _crafted(path, redirect):
    """A real checkpoint whose ModelCheckpoint state was edited to send the run to ``redirect``."""
    ckpt = torch.load(path, weights_only=True)
    [key] = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint")]
    state = ckpt["callbacks"][key]
    state["dirpath"] = redirect
    state["best_model_path"] = state["last_model_path"] = os.path.join(redirect, "last.ckpt")
    state["best_k_models"] = {os.path.join(redirect, "victim.ckpt"): 0.0}
    state["kth_best_model_path"] = os.path.join(redirect, "victim.ckpt")
    state["recent"] = [os.path.join(redirect, "victim.ckpt")]
    torch.save(ckpt, path)


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_a_crafted_checkpoint_never_decides_where_a_resumed_run_writes(tmp_path, make_trainer, regressor, loaders, kind):
    run_dir = tmp_path / "run" / "checkpoints"
    first = ModelCheckpoint(dirpath=run_dir, save_last=True, save_top_k=1)
    make_trainer(max_epochs=1, callbacks=[first]).fit(regressor(), *loaders)
    target = tmp_path / "target"  # where the checkpoint tries to send the resumed run
    target.mkdir()
    (target / "victim.ckpt").write_bytes(b"precious")
    redirect = str(target) if kind == "absolute" else os.path.join("..", "..", "target")
    resume_from = tmp_path / "crafted.ckpt"
    resume_from.write_bytes((run_dir / "last.ckpt").read_bytes())
    _crafted(resume_from, redirect)

    for configured in (True, False):  # a dirpath of its own, or the default under the log directory
        cb = ModelCheckpoint(dirpath=run_dir if configured else None, save_last=True, save_top_k=1)
        trainer = make_trainer(max_epochs=3, callbacks=[cb], default_root_dir=tmp_path / "run")
        with pytest.warns(UserWarning, match="this run writes to"):
            trainer.fit(regressor(), *loaders, ckpt_path=str(resume_from))
        expected = run_dir if configured else tmp_path / "run" / "checkpoints"
        assert cb.dirpath == str(expected)
        assert os.path.dirname(cb.best_model_path) == os.path.dirname(cb.last_model_path) == str(expected)
        assert sorted(os.listdir(target)) == ["victim.ckpt"] and (target / "victim.ckpt").read_bytes() == b"precious"
        assert not (tmp_path / "target" / "last.ckpt").exists()


def test_unwritable_checkpoint_directory_fails_at_set_up(tmp_path, make_trainer, regressor, loaders):
    (tmp_path / "a-file").write_text("")
    cb = ModelCheckpoint(dirpath=tmp_path / "a-file" / "ckpts")
    trainer = make_trainer(max_epochs=2, callbacks=[cb])
    model = regressor()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        OSError, match=r"cannot write checkpoints to .*a-file/ckpts: .*a-file is not a directory\. Set ModelCheckpoint\(dirpath="
    ) as info:
        trainer.fit(model, *loaders)
    assert info.value.errno == errno.ENOTDIR and "\n" not in str(info.value)
    assert trainer.global_step == 0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_stale_temp_files_of_a_dead_run_are_removed_at_the_next_start(tmp_path, make_trainer, regressor, loaders):
    import subprocess
    import sys

    from ember.plugins.checkpoint_io.torch_io import temp_name

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temp_name(str(tmp_path)).replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    live = temp_name(str(tmp_path))  # this process's: a save in progress, as far as anyone can tell
    other = tmp_path / ".tmp-notes.ckpt"  # not ember's pattern
    for path in (stale, live, other):
        open(path, "wb").write(b"half a checkpoint")
    make_trainer(max_epochs=1, callbacks=[ModelCheckpoint(dirpath=tmp_path)]).fit(regressor(), *loaders)
    assert not os.path.exists(stale) and os.path.exists(live) and other.exists()
    assert ckpts(tmp_path) == [".tmp-notes.ckpt", "epoch=0-step=4.ckpt"]
