"""CSVLogger: files on disk, read back with the csv and json modules."""

from __future__ import annotations

import csv
import json
import os
import sys
import warnings

import pytest

from ember.plugins.loggers import CSVLogger


def read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# --------------------------------------------------------------------------- without a trainer


def test_directory_layout_and_properties(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, name="exp")
    assert logger.name == "exp"
    assert logger.save_dir == str(tmp_path)
    assert logger.root_dir == os.path.join(str(tmp_path), "exp")
    assert logger.version == 0
    assert logger.log_dir == os.path.join(str(tmp_path), "exp", "version_0")
    assert os.listdir(logger.log_dir) == [], "asking for the version claims its directory (empty until something is written)"

    named = CSVLogger(save_dir=tmp_path, name="exp", version="baseline")
    assert named.log_dir == os.path.join(str(tmp_path), "exp", "baseline")


def test_version_auto_increments(tmp_path):
    paths = []
    for _ in range(3):
        logger = CSVLogger(save_dir=tmp_path)
        logger.log_metrics({"a": 1.0}, step=0)
        logger.finalize("success")
        paths.append(logger.log_dir)
    assert [os.path.basename(p) for p in paths] == ["version_0", "version_1", "version_2"]
    # a gap or a stray file does not confuse it
    os.makedirs(tmp_path / "ember_logs" / "version_7")
    (tmp_path / "ember_logs" / "version_9").write_text("not a directory")
    assert CSVLogger(save_dir=tmp_path).version == 8


def test_rows_in_order_and_header_widens(tmp_path):
    logger = CSVLogger(save_dir=tmp_path)
    logger.log_metrics({"loss": 1.5}, step=0)
    logger.save()
    logger.log_metrics({"loss": 1.25}, step=1)
    logger.save()  # appended, same header
    logger.log_metrics({"val_loss": 0.75, "loss": 1.0}, step=2)  # a new key
    logger.log_metrics({"lr": 0.1}, step=3)
    logger.save()
    header, rows = read_csv(os.path.join(logger.log_dir, "metrics.csv"))
    assert header == ["step", "loss", "val_loss", "lr"]
    assert rows == [
        {"step": "0", "loss": "1.5", "val_loss": "", "lr": ""},
        {"step": "1", "loss": "1.25", "val_loss": "", "lr": ""},
        {"step": "2", "loss": "1.0", "val_loss": "0.75", "lr": ""},
        {"step": "3", "loss": "", "val_loss": "", "lr": "0.1"},
    ]
    # the widened file is still a plain CSV: every line has the same number of fields
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as fh:
        assert {len(r) for r in csv.reader(fh)} == {4}
    # appended rows (no new key) follow the header's order, with empty cells for what a row lacks
    logger.log_metrics({"lr": 0.05, "loss": 0.5}, step=4)
    logger.log_metrics({"val_loss": 0.25}, step=5)
    logger.save()
    _, rows = read_csv(os.path.join(logger.log_dir, "metrics.csv"))
    assert rows[4:] == [{"step": "4", "loss": "0.5", "val_loss": "", "lr": "0.05"}, {"step": "5", "loss": "", "val_loss": "0.25", "lr": ""}]


def test_buffers_until_flush_interval(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, flush_logs_every_n_steps=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_metrics({"a": 2.0}, step=1)
    assert not os.path.exists(path), "two rows stay in memory"
    logger.log_metrics({"a": 3.0}, step=2)
    assert [r["a"] for r in read_csv(path)[1]] == ["1.0", "2.0", "3.0"]
    logger.log_metrics({"a": 4.0}, step=3)
    assert len(read_csv(path)[1]) == 3
    logger.finalize("success")
    assert [r["step"] for r in read_csv(path)[1]] == ["0", "1", "2", "3"]


def test_log_metrics_copies_and_does_no_io(tmp_path, monkeypatch):
    logger = CSVLogger(save_dir=tmp_path, flush_logs_every_n_steps=1000)
    opened = []

    def no_open(*args, **kwargs):
        opened.append(args)
        raise AssertionError("log_metrics must not touch files before the flush interval")

    monkeypatch.setattr("builtins.open", no_open)
    metrics = {"a": 1.0}
    for step in range(200):
        logger.log_metrics(metrics, step)
    metrics["a"] = 99.0  # the caller reusing its dict must not change what was logged
    monkeypatch.undo()
    assert opened == []
    logger.save()
    rows = read_csv(os.path.join(logger.log_dir, "metrics.csv"))[1]
    assert len(rows) == 200 and {r["a"] for r in rows} == {"1.0"}


def test_tensor_values_are_written_as_numbers(tmp_path):
    torch = pytest.importorskip("torch")
    logger = CSVLogger(save_dir=tmp_path)
    logger.log_metrics({"a": torch.tensor(0.5)}, step=4)  # type: ignore[dict-item]
    logger.save()
    assert read_csv(os.path.join(logger.log_dir, "metrics.csv"))[1] == [{"step": "4", "a": "0.5"}]


def test_hparams_json(tmp_path):
    torch = pytest.importorskip("torch")
    logger = CSVLogger(save_dir=tmp_path)
    logger.log_hyperparams({"lr": 0.1, "layers": (2, 3), "act": torch.nn.ReLU})
    logger.log_hyperparams({"batch_size": 8})
    with open(os.path.join(logger.log_dir, "hparams.json")) as fh:
        data = json.load(fh)
    assert data["lr"] == 0.1 and data["layers"] == [2, 3] and data["batch_size"] == 8
    assert "ReLU" in data["act"]


def test_state_dict_resumes_in_the_same_directory(tmp_path):
    first = CSVLogger(save_dir=tmp_path)
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    state = first.state_dict()
    assert state == {"version": 0}

    CSVLogger(save_dir=tmp_path).log_metrics({"x": 0.0}, 0)  # another run takes version_1 meanwhile
    resumed = CSVLogger(save_dir=tmp_path)
    resumed.load_state_dict(state)
    assert resumed.version == 0 and resumed.log_dir == first.log_dir
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resuming into the file is expected: no warning
        resumed.log_metrics({"a": 2.0}, step=1)
        resumed.log_metrics({"b": 3.0}, step=2)
        resumed.finalize("success")
    header, rows = read_csv(os.path.join(first.log_dir, "metrics.csv"))
    assert header == ["step", "a", "b"]
    assert [(r["step"], r["a"], r["b"]) for r in rows] == [("0", "1.0", ""), ("1", "2.0", ""), ("2", "", "3.0")]


def test_existing_file_without_resume_is_appended_with_a_warning(tmp_path):
    first = CSVLogger(save_dir=tmp_path, version=0)
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    again = CSVLogger(save_dir=tmp_path, version=0)
    again.log_metrics({"a": 2.0}, step=0)
    with pytest.warns(UserWarning, match="already exists"):
        again.save()
    assert [r["a"] for r in read_csv(os.path.join(first.log_dir, "metrics.csv"))[1]] == ["1.0", "2.0"]


def test_rejects_bad_flush_interval(tmp_path):
    with pytest.raises(ValueError, match="flush_logs_every_n_steps"):
        CSVLogger(save_dir=tmp_path, flush_logs_every_n_steps=0)


def test_registered_as_csv_logger(tmp_path):
    from ember.plugin_manager import PluginManager

    pm = PluginManager()
    pm.load_builtins()
    # kind and name are positional-only, so the factory's own `name` gets through
    logger = pm.build_registry().create("logger", "csv", save_dir=tmp_path, name="n")
    assert isinstance(logger, CSVLogger) and logger.name == "n"


@pytest.mark.slow
def test_importing_loggers_does_not_import_tqdm():
    """Importing ember's loggers and callbacks needs no tqdm (the progress bar
    imports it when it first draws). torch itself may import tqdm, so the check
    blocks the module instead of looking at sys.modules."""
    import subprocess

    code = "import sys; sys.modules['tqdm'] = None; import ember.plugins.loggers, ember.plugins.callbacks; print('imported')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "imported"


# --------------------------------------------------------------------------- with a trainer


def test_fit_writes_metrics_and_hparams(tmp_path, make_trainer, regressor, loaders):
    class WithHparams(regressor):  # type: ignore[misc,valid-type]
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__(lr=lr)
            self.save_hyperparameters()

    logger = CSVLogger(save_dir=tmp_path, name="run", flush_logs_every_n_steps=5)
    trainer = make_trainer(logger=logger, max_epochs=3, log_every_n_steps=2)
    trainer.fit(WithHparams(lr=0.01), *loaders)

    assert trainer.log_dir == logger.log_dir == os.path.join(str(tmp_path), "run", "version_0")
    header, rows = read_csv(os.path.join(logger.log_dir, "metrics.csv"))
    assert header[0] == "step" and {"train_loss", "val_loss", "epoch"} <= set(header)
    train_rows = [r for r in rows if r["train_loss"]]
    val_rows = [r for r in rows if r["val_loss"]]
    # 4 batches x 3 epochs = 12 steps, logged every 2 steps
    assert [int(r["step"]) for r in train_rows] == list(range(2, 13, 2))
    assert len(val_rows) == 3, "one epoch-level validation row per epoch"
    assert [int(float(r["epoch"])) for r in val_rows] == [0, 1, 2]
    assert all(float(r["val_loss"]) >= 0 for r in val_rows)
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps)

    with open(os.path.join(logger.log_dir, "hparams.json")) as fh:
        assert json.load(fh) == {"lr": 0.01}


def test_default_logger_is_csv_under_default_root_dir(tmp_path, regressor, loaders):
    from ember import Trainer

    # As in Lightning, TensorBoard is the default when it is installed; without
    # its plugin (or the package) the default is this CSV logger.
    trainer = Trainer(
        disable_plugins=["tensorboard"],
        default_root_dir=tmp_path,
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    assert isinstance(trainer.logger, CSVLogger)
    trainer.fit(regressor(), *loaders)
    path = os.path.join(str(tmp_path), "ember_logs", "version_0", "metrics.csv")
    header, rows = read_csv(path)
    assert "train_loss" in header and len([r for r in rows if r["train_loss"]]) == 4


def test_resumed_fit_continues_in_the_same_version(tmp_path, make_trainer, regressor, loaders):
    import torch

    from ember.plugins.callbacks import ModelCheckpoint

    first = CSVLogger(save_dir=tmp_path)
    make_trainer(max_epochs=2, logger=first, log_every_n_steps=4, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)]).fit(
        regressor(), *loaders
    )
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["callbacks"][first.state_key] == {"version": 0}

    second = CSVLogger(save_dir=tmp_path)
    trainer = make_trainer(
        max_epochs=4, logger=second, log_every_n_steps=4, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)]
    )
    trainer.fit(regressor(), *loaders, ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert second.version == 0 and trainer.log_dir == first.log_dir
    assert sorted(os.listdir(tmp_path / "ember_logs")) == ["version_0"], "no new version directory"
    _, rows = read_csv(os.path.join(first.log_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [4, 8, 12, 16]


@pytest.mark.parametrize(("save_at", "at_validation_end"), [(6, False), (8, True)])
def test_resume_after_a_crash_past_the_checkpoint_keeps_one_history(tmp_path, save_at, at_validation_end):
    """A run checkpointed at ``save_at`` crashes at step 11; the fit resumed from
    the checkpoint continues the same file with every step once (the crashed
    run's rows after the checkpoint are moved to superseded.csv, not repeated)."""
    import torch
    from logger_testkit import LoggedModule, run_fit

    from ember.callback import Callback

    class SaveThenCrash(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == save_at and not at_validation_end:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
            if trainer.global_step == 11:
                raise RuntimeError("crash")

        def on_validation_end(self, trainer, module):
            if at_validation_end and trainer.global_step == save_at:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    reference = CSVLogger(save_dir=tmp_path / "ref")
    run_fit(tmp_path / "ref", [reference], epochs=4)
    crashed = CSVLogger(save_dir=tmp_path / "run")
    with pytest.raises(RuntimeError, match="crash"):
        run_fit(tmp_path / "run", [crashed], epochs=4, callbacks=[SaveThenCrash()])
    torch.manual_seed(0)
    resumed = CSVLogger(save_dir=tmp_path / "run")
    run_fit(tmp_path / "run", [resumed], epochs=4, ckpt_path=str(tmp_path / "mid.ckpt"), module=LoggedModule())
    assert resumed.log_dir == crashed.log_dir
    _, got = read_csv(resumed.metrics_file_path)
    _, want = read_csv(reference.metrics_file_path)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] == b[key] == "") or abs(float(a[key]) - float(b[key])) <= 1e-5 * max(1.0, abs(float(b[key]))), (key, a, b)
    _, superseded = read_csv(os.path.join(resumed.log_dir, "superseded.csv"))
    assert sorted({int(r["step"]) for r in superseded}) == list(range(save_at + 1, 12))
