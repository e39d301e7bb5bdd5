"""ModelSummary / summarize: the table and totals match the module's parameters."""

from __future__ import annotations

import re

import pytest
import torch

from ember.plugins.callbacks import ModelSummary, summarize


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 5))  # 220 + 105
        self.head = torch.nn.Linear(5, 2)  # 12
        self.norm = torch.nn.BatchNorm1d(2)  # 4 (buffers not counted)


def rows(text: str) -> dict[str, tuple[str, str]]:
    """name -> (type, params) from the table lines ``i | name | type | params | mode``."""
    out = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 5 and parts[0].isdigit():
            out[parts[1]] = (parts[2], parts[3])
    return out


def total(text: str, label: str) -> str:
    m = re.search(rf"^(\S+(?: [KMBT])?)\s+{re.escape(label)}$", text, re.M)
    assert m, f"{label!r} missing from:\n{text}"
    return m.group(1)


def test_depth_one_lists_children_with_counts():
    text = summarize(Net(), max_depth=1)
    assert rows(text) == {"encoder": ("Sequential", "325"), "head": ("Linear", "12"), "norm": ("BatchNorm1d", "4")}
    assert total(text, "Total params") == "341"
    assert total(text, "Trainable params") == "341"
    assert total(text, "Non-trainable params") == "0"
    assert float(total(text, "Total estimated model params size (MB)")) == pytest.approx(341 * 4 / 1e6, abs=1e-3)


def test_deeper_levels_and_all_levels():
    two = rows(summarize(Net(), max_depth=2))
    assert two["encoder.0"] == ("Linear", "220") and two["encoder.1"] == ("ReLU", "0") and two["encoder.2"] == ("Linear", "105")
    assert rows(summarize(Net(), max_depth=-1)) == two
    assert rows(summarize(Net(), max_depth=0)) == {}, "depth 0: totals only"


def test_frozen_and_shared_parameters_and_large_counts():
    net = Net()
    net.encoder.requires_grad_(False)
    net.tied = net.head  # the same parameters reachable twice count once
    big = torch.nn.Module()
    big.emb = torch.nn.Embedding(100_000, 30)  # 3.0 M
    text = summarize(net, 1)
    assert total(text, "Trainable params") == "16"
    assert total(text, "Non-trainable params") == "325"
    assert total(text, "Total params") == "341"
    assert total(summarize(big, 1), "Total params") == "3.0 M"
    half = torch.nn.Linear(1000, 1000).to(torch.float16)  # 1,001,000 params x 2 bytes
    assert float(total(summarize(half, 1), "Total estimated model params size (MB)")) == pytest.approx(2.002, abs=1e-3)


def test_lazy_parameters_do_not_crash():
    text = summarize(torch.nn.Sequential(torch.nn.LazyLinear(3)), 1)
    assert rows(text)["0"] == ("LazyLinear", "?")
    assert "lazy" in text


def test_callback_prints_at_fit_start(capsys, make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=1, callbacks=[ModelSummary(max_depth=1)])
    trainer.fit(regressor(), *loaders)
    out = capsys.readouterr().out
    assert rows(out) == {"layer": ("Linear", "5")}
    assert total(out, "Total params") == "5"
    assert out.count("Total params") == 1


def test_default_summary_and_depth_zero(capsys, make_trainer, regressor, loaders):
    make_trainer(max_epochs=1, enable_model_summary=True).fit(regressor(), *loaders)
    assert "Total params" in capsys.readouterr().out
    trainer = make_trainer(max_epochs=1, enable_model_summary=True, callbacks=[ModelSummary(max_depth=0)])
    assert sum(isinstance(cb, ModelSummary) for cb in trainer.callbacks) == 1, "the user's instance fills the slot"
    trainer.fit(regressor(), *loaders)
    assert "Total params" not in capsys.readouterr().out


def test_rejects_bad_depth():
    with pytest.raises(ValueError):
        ModelSummary(max_depth=-2)
