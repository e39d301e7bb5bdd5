"""ProgressBar: plain lines when stdout is not a terminal, tqdm bars when it is."""

from __future__ import annotations

import re
import sys

import torch
from torch.utils.data import DataLoader, IterableDataset

import ember
from ember.plugins.callbacks import ProgressBar

PLAIN = re.compile(r"^epoch (\d+)/(\d+) · batch (\d+)/(\d+)(.*)$")


def lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


def test_plain_mode_prints_one_line_per_epoch_with_metrics(capsys, make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=3, callbacks=[ProgressBar(plain_interval_s=3600)])
    trainer.fit(regressor(), *loaders)
    out = lines(capsys.readouterr().out)
    assert len(out) == 3, out
    for epoch, line in enumerate(out, start=1):
        m = PLAIN.match(line)
        assert m, line
        assert m.groups()[:4] == (str(epoch), "3", "4", "4")
        metrics = dict(kv.split("=") for kv in m.group(5).split(" · ")[1:])
        assert set(metrics) == {"train_loss", "val_loss"}, "prog_bar metrics from training and validation"
        float(metrics["train_loss"]), float(metrics["val_loss"])


def test_plain_mode_periodic_lines(capsys, make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=1, callbacks=[ProgressBar(plain_interval_s=0.0)])
    trainer.fit(regressor(), *loaders)
    out = lines(capsys.readouterr().out)
    # one line per batch (interval 0), then the epoch-end line
    assert [PLAIN.match(line).group(3) for line in out] == ["1", "2", "3", "4", "4"]  # type: ignore[union-attr]


def test_metrics_read_only_when_displayed(capsys, monkeypatch, make_trainer, regressor, loaders):
    reads = []
    original = ember.Trainer.progress_bar_metrics

    def counting(self):
        reads.append(self.global_step)
        return original.fget(self)

    monkeypatch.setattr(ember.Trainer, "progress_bar_metrics", property(counting))
    trainer = make_trainer(max_epochs=3, callbacks=[ProgressBar(refresh_rate_s=3600, plain_interval_s=3600)])
    trainer.fit(regressor(), *loaders)
    assert len(lines(capsys.readouterr().out)) == 3
    # 12 steps; per epoch one read keeps the validation values, one draws the epoch-end line
    assert reads == [4, 4, 8, 8, 12, 12]


def test_time_based_refresh_uses_monotonic_clock(capsys, monkeypatch, make_trainer, regressor, loaders):
    import ember.plugins.callbacks.progress as progress

    clock = iter(range(0, 10_000))  # every read of the clock is one second later
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    trainer = make_trainer(max_epochs=1, num_sanity_val_steps=0, callbacks=[ProgressBar(plain_interval_s=2.5)])
    trainer.fit(regressor(), *loaders)
    out = lines(capsys.readouterr().out)
    assert 1 <= len(out) - 1 < 4, "some periodic lines, but not one per batch"


def test_test_and_predict_lines(capsys, make_trainer, regressor, loaders):
    trainer = make_trainer(callbacks=[ProgressBar(plain_interval_s=3600)])
    model = regressor()
    trainer.test(model, loaders[1], verbose=False)
    out = lines(capsys.readouterr().out)
    assert len(out) == 1 and out[0].startswith("test · batch 2/2 · test_loss="), out
    trainer.predict(model, loaders[1])
    assert lines(capsys.readouterr().out) == ["predict · batch 2/2"]
    trainer.validate(model, loaders[1], verbose=False)
    out = lines(capsys.readouterr().out)
    assert len(out) == 1 and out[0].startswith("validation · batch 2/2 · val_loss="), out


class Stream(IterableDataset):
    """Six batches of unknown length."""

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(6):
            x = torch.randn(4, 4, generator=g)
            yield x, x.sum(1, keepdim=True)


def test_unknown_number_of_batches(capsys, make_trainer, regressor):
    trainer = make_trainer(max_epochs=2, callbacks=[ProgressBar(plain_interval_s=3600)])
    trainer.fit(regressor(), DataLoader(Stream(), batch_size=None))
    assert trainer.num_training_batches == float("inf")
    out = lines(capsys.readouterr().out)
    assert [line.split(" · ")[:2] for line in out] == [["epoch 1/2", "batch 6"], ["epoch 2/2", "batch 6"]]


def test_tqdm_on_a_terminal(capsys, monkeypatch, make_trainer, regressor, loaders):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    trainer = make_trainer(max_epochs=2, num_sanity_val_steps=1, callbacks=[ProgressBar(refresh_rate_s=0.0)])
    trainer.fit(regressor(), *loaders)
    out = capsys.readouterr().out
    assert "\r" in out, "tqdm redraws in place"
    assert "epoch 2/2" in out and "4/4" in out and "train_loss=" in out and "val_loss=" in out
    assert "validation" in out and "sanity check" in out
    assert "tqdm" in sys.modules


def test_default_progress_bar_and_disable(capsys, make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=1, enable_progress_bar=True)
    bars = [cb for cb in trainer.callbacks if isinstance(cb, ProgressBar)]
    assert len(bars) == 1 and trainer.progress_bar_callback is bars[0]
    bars[0].plain_interval_s = 3600
    trainer.fit(regressor(), *loaders)
    assert len(lines(capsys.readouterr().out)) == 1
    bars[0].disable()
    make_trainer(max_epochs=1, callbacks=[bars[0]]).fit(regressor(), *loaders)
    assert lines(capsys.readouterr().out) == []
