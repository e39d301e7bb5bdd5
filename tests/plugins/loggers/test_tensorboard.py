"""TensorBoardLogger: real fits, read back with TensorBoard's EventAccumulator."""

from __future__ import annotations

import csv
import json
import os
import time

import pytest

pytest.importorskip("tensorboard", reason="TensorBoardLogger needs tensorboard (pip install 'ember[tensorboard]')")

from logger_testkit import (  # noqa: E402
    EPOCH_KEY,
    STEP_KEY,
    LoggedModule,
    Recorder,
    assert_lazy_import,
    assert_same_series,
    check_series_shape,
    run_fit,
)

from ember.plugins.callbacks import ModelCheckpoint  # noqa: E402
from ember.plugins.loggers import CSVLogger  # noqa: E402
from ember.plugins.loggers.tensorboard import TensorBoardLogger  # noqa: E402


def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_hparams(log_dir: str) -> dict[str, object]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    found: dict[str, object] = {}
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.WhichOneof("data") == "session_start_info":
            for key, value in data.session_start_info.hparams.items():
                found[key] = getattr(value, value.WhichOneof("kind"))
    return found


@pytest.mark.slow
def test_module_import_and_trainer_do_not_import_tensorboard():
    assert_lazy_import("ember.plugins.loggers.tensorboard", ("tensorboard", "tensorflow"))


def test_directory_layout_and_version_increment(tmp_path):
    first = TensorBoardLogger(save_dir=tmp_path, name="exp")
    assert (first.name, first.version, first.save_dir) == ("exp", 0, str(tmp_path))
    assert first.log_dir == os.path.join(str(tmp_path), "exp", "version_0")
    assert os.listdir(first.log_dir) == [], "asking for the version claims its directory (empty until something is written)"
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    assert TensorBoardLogger(save_dir=tmp_path, name="exp").version == 1
    assert TensorBoardLogger(save_dir=tmp_path, name="exp", version="run_a").log_dir.endswith(os.path.join("exp", "run_a"))


@pytest.mark.parametrize("every", [1, 3])
def test_fit_scalars_match_what_was_logged(tmp_path, every):
    recorder = Recorder()
    tb = TensorBoardLogger(save_dir=tmp_path)
    run_fit(tmp_path, [recorder, tb], epochs=3, every=every)
    got = read_scalars(tb.log_dir)
    assert got.pop("hp_metric") == [(0, -1.0)]  # default_hp_metric=True, as in Lightning
    expected = recorder.series()
    check_series_shape(expected, epochs=3, every=every)
    assert_same_series(got, expected)  # float32 in the event file
    assert "epoch" in got and got["epoch"][-1] == (12, 2.0)


def test_hyperparameters_for_the_hparams_dashboard_and_json(tmp_path):
    tb = TensorBoardLogger(save_dir=tmp_path)  # default_hp_metric=True
    run_fit(tmp_path, [tb], epochs=1, module=LoggedModule(lr=0.02, note="hello", opt={"beta": 0.9, "kind": None}))
    hp = read_hparams(tb.log_dir)
    assert hp["lr"] == pytest.approx(0.02) and hp["width"] == 4 and hp["note"] == "hello"
    assert hp["opt/beta"] == pytest.approx(0.9) and hp["opt/kind"] == "None", "nested dicts are flattened with '/'"
    with open(os.path.join(tb.log_dir, "hparams.json")) as fh:
        assert json.load(fh) == {"lr": 0.02, "width": 4, "note": "hello", "opt": {"beta": 0.9, "kind": None}}
    assert read_scalars(tb.log_dir)["hp_metric"] == [(0, -1.0)]
    assert not [d for d in os.listdir(tb.log_dir) if os.path.isdir(os.path.join(tb.log_dir, d))], "no extra sub-run directory"


def test_sub_dir_and_no_default_hp_metric(tmp_path):
    tb = TensorBoardLogger(save_dir=tmp_path, name="exp", sub_dir="train", default_hp_metric=False)
    run_fit(tmp_path, [tb], epochs=1, module=LoggedModule(lr=0.02))
    assert tb.log_dir == os.path.join(str(tmp_path), "exp", "version_0", "train") and tb.sub_dir == "train"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tb.log_dir))
    assert os.path.isfile(os.path.join(tb.log_dir, "hparams.json"))
    scalars = read_scalars(tb.log_dir)
    assert scalars and "hp_metric" not in scalars


def test_same_series_as_csv_logger_when_used_together(tmp_path):
    csv_logger = CSVLogger(save_dir=tmp_path, name="csv")
    tb = TensorBoardLogger(save_dir=tmp_path, name="tb", default_hp_metric=False)
    trainer = run_fit(tmp_path, [csv_logger, tb], epochs=2, every=2)
    assert trainer.log_dir == csv_logger.log_dir
    from_csv: dict[str, list[tuple[int, float]]] = {}
    with open(csv_logger.metrics_file_path, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key != "step" and value != "":
                    points = from_csv.setdefault(key, [])
                    if (int(row["step"]), float(value)) not in points:
                        points.append((int(row["step"]), float(value)))
    assert_same_series(read_scalars(tb.log_dir), from_csv)


def test_resume_continues_the_same_version_and_steps(tmp_path):
    reference = Recorder()
    run_fit(tmp_path / "ref", [reference], epochs=4)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    run_fit(tmp_path, [TensorBoardLogger(save_dir=tmp_path, default_hp_metric=False)], epochs=2, callbacks=[ckpt], enable_checkpointing=True)
    TensorBoardLogger(save_dir=tmp_path).log_metrics({"other": 0.0}, 0)  # another run takes version_1 meanwhile
    resumed = TensorBoardLogger(save_dir=tmp_path, default_hp_metric=False)
    run_fit(tmp_path, [resumed], epochs=4, ckpt_path=ckpt.last_model_path)
    assert resumed.version == 0
    assert_same_series(read_scalars(resumed.log_dir), reference.series(), rel=1e-5)


def test_resume_from_mid_epoch_checkpoint_hides_the_steps_logged_after_it(tmp_path):
    """The interrupted run went on past its checkpoint; the resumed run logs those
    steps again, and TensorBoard shows each step once, with the resumed values."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    first = TensorBoardLogger(save_dir=tmp_path)
    run_fit(tmp_path, [first], epochs=3, callbacks=[ckpt], enable_checkpointing=True, module=LoggedModule(lr=0.05))
    path = os.path.join(tmp_path, "ckpt", "step=6.ckpt")
    assert os.path.exists(path), os.listdir(tmp_path / "ckpt")
    recorder = Recorder()
    # TensorBoard reads a directory's event files in name order, and a name is
    # "<unix second>.<host>.<pid>.<writer count>": within one second of one
    # process, writer 10 sorts before writer 9. A real resume is a later
    # process; wait for the next second so that this one is too.
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    run_fit(tmp_path, [recorder, TensorBoardLogger(save_dir=tmp_path)], epochs=3, ckpt_path=path, module=LoggedModule(lr=0.05))
    got = read_scalars(first.log_dir)
    assert [s for s, _ in got[STEP_KEY]] == list(range(1, 13))
    assert [s for s, _ in got[EPOCH_KEY]] == [4, 8, 12]
    resumed_values = dict(recorder.series()[STEP_KEY])
    assert min(resumed_values) == 7
    for step, value in got[STEP_KEY]:
        if step in resumed_values:
            assert value == pytest.approx(resumed_values[step], rel=1e-6)


def test_same_step_repeats_are_written_once(tmp_path):
    tb = TensorBoardLogger(save_dir=tmp_path)
    tb.log_metrics({"loss": 1.0, "epoch": 0}, step=4)
    tb.log_metrics({"val": 2.0, "epoch": 0}, step=4)  # epoch again at the same step
    tb.log_metrics({"epoch": 1}, step=5)
    tb.finalize("success")
    assert read_scalars(tb.log_dir) == {"loss": [(4, 1.0)], "val": [(4, 2.0)], "epoch": [(4, 0.0), (5, 1.0)]}


def test_registered_by_name(tmp_path):
    import ember

    trainer = ember.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    logger = trainer._registry.create("logger", "tensorboard", save_dir=tmp_path)
    assert isinstance(logger, TensorBoardLogger)
