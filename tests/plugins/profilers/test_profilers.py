"""Profilers on real fits: the report names the slow code and its owner, files
are written, and with no profiler nothing is wrapped."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.plugins.profilers import AdvancedProfiler, SimpleProfiler, TorchProfiler

SLEEP = 0.02


def make_loader(n: int, batch_size: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)), batch_size=batch_size)


class SlowCallback(ember.Callback):
    """Sleeps at the end of every training batch: the planted top cost."""

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        time.sleep(SLEEP)


class Counter(ember.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1


def hook_rows(profiler: SimpleProfiler) -> list[dict[str, Any]]:
    return [r for r in profiler.results() if r["kind"] == "hook"]


def loop_row(profiler: SimpleProfiler, label: str) -> dict[str, Any]:
    return next(r for r in profiler.results() if r["kind"] == "loop" and r["hook"] == label)


# --------------------------------------------------------------------------- simple


def test_simple_names_the_slow_callback_as_top_cost(make_trainer, regressor, loaders, capsys):
    trainer = make_trainer(max_epochs=2, profiler="simple", callbacks=[Counter(), SlowCallback()])
    assert isinstance(trainer.profiler, SimpleProfiler)
    trainer.fit(regressor(), *loaders)

    rows = hook_rows(trainer.profiler)
    top = rows[0]
    assert (top["hook"], top["owner"]) == ("on_train_batch_end", "callback:SlowCallback")
    assert top["calls"] == 8  # 4 batches x 2 epochs
    assert top["total_s"] >= 8 * SLEEP
    assert top["mean_s"] == pytest.approx(top["total_s"] / 8)
    assert 0 < top["percent"] <= 100
    # every other hook costs far less, and the counter's hook was counted too
    assert all(r["total_s"] < top["total_s"] / 4 for r in rows[1:])
    counter = next(r for r in rows if r["owner"] == "callback:Counter")
    assert counter["hook"] == "on_train_batch_start" and counter["calls"] == 8
    # loop units: 8 training batches each containing the sleep, 2 epochs
    batch = loop_row(trainer.profiler, "training batch")
    assert batch["calls"] == 8 and batch["total_s"] >= 8 * SLEEP
    assert loop_row(trainer.profiler, "training epoch")["calls"] == 2
    assert loop_row(trainer.profiler, "validation batch")["calls"] == 4

    printed = capsys.readouterr().out
    assert "SimpleProfiler report (fit)" in printed
    first_hook_line = printed.split("% run\n", 2)[2].splitlines()[1]  # after the hook table's header and rule
    assert "on_train_batch_end" in first_hook_line and "callback:SlowCallback" in first_hook_line
    assert trainer.profiler.summary() in printed
    assert trainer.profiler.report_path is None  # no dirpath/filename: no file


def test_simple_times_module_hooks_with_their_owner(make_trainer, regressor, loaders):
    class Hooked(regressor):  # type: ignore[misc,valid-type]
        def on_train_epoch_end(self) -> None:
            time.sleep(SLEEP)

    trainer = make_trainer(max_epochs=1, profiler="simple")
    trainer.fit(Hooked(), *loaders)
    top = hook_rows(trainer.profiler)[0]
    assert (top["hook"], top["owner"], top["calls"]) == ("on_train_epoch_end", "module:Hooked", 1)


def test_simple_writes_the_report_file(make_trainer, regressor, loaders, tmp_path):
    profiler = SimpleProfiler(dirpath=tmp_path / "prof", filename="fit-report")
    trainer = make_trainer(max_epochs=1, profiler=profiler, callbacks=[SlowCallback()])
    trainer.fit(regressor(), *loaders)
    path = tmp_path / "prof" / "fit-report.txt"
    assert profiler.report_path == str(path)
    text = path.read_text()
    assert text == profiler.summary()
    assert "callback:SlowCallback" in text and "on_train_batch_end" in text


def test_simple_reports_each_run_separately(make_trainer, regressor, loaders, capsys):
    profiler = SimpleProfiler()
    trainer = make_trainer(max_epochs=1, profiler=profiler, callbacks=[SlowCallback()])
    trainer.fit(regressor(), *loaders)
    assert hook_rows(profiler)[0]["calls"] == 4
    trainer.validate(dataloaders=loaders[1])
    out = capsys.readouterr().out
    assert "SimpleProfiler report (validate)" in out  # printed at teardown
    # the validate run starts from zero: the training hook is gone from the table
    assert all(r["hook"] != "on_train_batch_end" for r in hook_rows(profiler))
    assert loop_row(profiler, "validation batch")["calls"] == 2


def test_profiler_wraps_every_implementation_and_not_its_own(make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=1, profiler="simple", callbacks=[SlowCallback()])
    trainer.fit(regressor(), *loaders)
    end_hooks = trainer._dispatch.on_train_batch_end
    owners = [getattr(fn, "ember_profiled", None) for fn in end_hooks]
    assert ("on_train_batch_end", "callback:SlowCallback") in owners
    # its own batch-timing hook is called directly
    assert sum(o is None for o in owners) == 1
    assert any(getattr(fn, "__self__", None) is trainer.profiler for fn in end_hooks)


def test_no_profiler_leaves_the_dispatch_raw(make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=1, callbacks=[SlowCallback()])
    assert trainer.profiler is None
    trainer.fit(regressor(), *loaders)
    d = trainer._dispatch
    fns = [fn for name in ("on_train_batch_end", "on_train_batch_start", "on_validation_end", "setup") for fn in getattr(d, name)]
    assert fns  # there is something to look at
    assert not any(hasattr(fn, "ember_profiled") or hasattr(fn, "__wrapped__") for fn in fns)
    slow = trainer.callbacks[0]
    assert d.on_train_batch_end[0] == slow.on_train_batch_end  # the bound method itself


def test_unknown_profiler_name_is_a_clear_error():
    with pytest.raises(LookupError, match="No profiler named 'simpel'.*Did you mean 'simple'"):
        ember.Trainer(profiler="simpel", logger=False, enable_progress_bar=False)


# --------------------------------------------------------------------------- advanced


def test_advanced_writes_cprofile_statistics(make_trainer, regressor, loaders, tmp_path, capsys):
    profiler = AdvancedProfiler(dirpath=tmp_path / "adv", line_count_restriction=30, dump_stats=True)
    trainer = make_trainer(max_epochs=1, profiler=profiler, callbacks=[SlowCallback()])
    trainer.fit(regressor(), *loaders)
    path = tmp_path / "adv" / "advanced_profile.txt"
    text = path.read_text()
    # the per-hook table ...
    assert hook_rows(profiler)[0]["owner"] == "callback:SlowCallback"
    assert "callback:SlowCallback" in text
    # ... and cProfile's listing, where the sleeping callback shows up by function
    assert "cProfile: top 30 functions" in text and "cumtime" in text
    assert "on_train_batch_end" in profiler.cprofile_text() and "time.sleep" in text
    assert os.path.getsize(tmp_path / "adv" / "advanced_profile.prof") > 0
    import pstats

    stats = pstats.Stats(str(tmp_path / "adv" / "advanced_profile.prof"))
    assert stats.total_calls > 0
    assert "cProfile: top" in capsys.readouterr().out


def test_advanced_defaults_as_lightning_whole_listing_and_no_stats_file(make_trainer, regressor, loaders, tmp_path):
    short = AdvancedProfiler(dirpath=tmp_path / "short", line_count_restriction=5)
    make_trainer(max_epochs=1, profiler=short).fit(regressor(), *loaders)
    profiler = AdvancedProfiler(dirpath=tmp_path / "adv")
    make_trainer(max_epochs=1, profiler=profiler).fit(regressor(), *loaders)
    assert "cProfile: all functions" in (tmp_path / "adv" / "advanced_profile.txt").read_text()
    assert not (tmp_path / "adv" / "advanced_profile.prof").exists() and profiler.stats_path is None
    assert "to 5 due to restriction <5>" in short.cprofile_text()
    assert "due to restriction" not in profiler.cprofile_text()
    half = AdvancedProfiler(dirpath=tmp_path / "half", line_count_restriction=0.5)
    make_trainer(max_epochs=1, profiler=half).fit(regressor(), *loaders)
    assert "cProfile: top 50% of functions" in (tmp_path / "half" / "advanced_profile.txt").read_text()
    assert "due to restriction <0.5>" in half.cprofile_text()
    with pytest.raises(ValueError, match="line_count_restriction=1.5"):
        AdvancedProfiler(line_count_restriction=1.5)


def test_advanced_by_name_defaults_to_log_dir(make_trainer, regressor, loaders):
    trainer = make_trainer(max_epochs=1, profiler="advanced")
    trainer.fit(regressor(), *loaders)
    assert isinstance(trainer.profiler, AdvancedProfiler)
    assert os.path.isfile(os.path.join(trainer.log_dir, "advanced_profile.txt"))


# --------------------------------------------------------------------------- torch.profiler


def test_torch_profiler_exports_a_chrome_trace_with_hook_ranges(make_trainer, regressor, tmp_path, capsys):
    profiler = TorchProfiler(dirpath=tmp_path / "trace", wait=1, warmup=1, active=2, row_limit=5)
    trainer = make_trainer(max_epochs=1, profiler=profiler, callbacks=[SlowCallback()])
    trainer.fit(regressor(), make_loader(64, 8))  # 8 batches: one full window of 1 + 1 + 2
    assert len(profiler.trace_paths) == 1
    path = profiler.trace_paths[0]
    assert os.path.dirname(path) == str(tmp_path / "trace")
    with open(path, encoding="utf-8") as fh:
        trace = json.load(fh)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    assert len(events) > 0
    names = {e.get("name") for e in events}
    assert "callback:SlowCallback.on_train_batch_end" in names
    assert "training_batch" in names
    assert any(str(n).startswith("aten::") for n in names)  # the model's operators
    assert "TorchProfiler: 1 trace(s)" in capsys.readouterr().out


def _trace_names(profiler: TorchProfiler) -> set[str]:
    with open(profiler.trace_paths[0], encoding="utf-8") as fh:
        trace = json.load(fh)
    return {str(e.get("name")) for e in (trace["traceEvents"] if isinstance(trace, dict) else trace)}


def test_torch_profiler_records_module_names(make_trainer, regressor, tmp_path):
    module = regressor()
    leaves = [(name, type(m).__name__) for name, m in module.named_modules() if name]
    assert leaves  # the module has submodules to name
    named = TorchProfiler(dirpath=tmp_path / "named", wait=0, warmup=0, active=2, row_limit=0)
    make_trainer(max_epochs=1, profiler=named).fit(module, make_loader(16, 8))
    names = _trace_names(named)
    assert f"[module] <root>: {type(module).__name__}" in names
    assert all(f"[module] {n}: {t}" in names for n, t in leaves), (leaves, sorted(x for x in names if x.startswith("[module]")))
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in module.modules())  # removed at the end
    plain = TorchProfiler(dirpath=tmp_path / "plain", wait=0, warmup=0, active=2, row_limit=0, record_module_names=False)
    make_trainer(max_epochs=1, profiler=plain).fit(regressor(), make_loader(16, 8))
    assert not any(n.startswith("[module]") for n in _trace_names(plain))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_torch_profiler_emit_nvtx_needs_cuda(make_trainer, regressor, tmp_path):
    trainer = make_trainer(max_epochs=1, profiler=TorchProfiler(dirpath=tmp_path, emit_nvtx=True))
    with pytest.raises(ValueError, match="emit_nvtx=True.*no CUDA device"):
        trainer.fit(regressor(), make_loader(16, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NVTX ranges need CUDA")
def test_torch_profiler_emit_nvtx_runs_without_a_trace(make_trainer, regressor, tmp_path):
    profiler = TorchProfiler(dirpath=tmp_path, emit_nvtx=True)
    trainer = make_trainer(max_epochs=1, accelerator="cuda", devices=1, profiler=profiler)
    trainer.fit(regressor(), make_loader(16, 8))
    assert trainer.global_step == 2 and profiler.trace_paths == [] and torch.autograd._profiler_enabled() is False


def test_torch_profiler_warns_when_the_run_is_too_short(make_trainer, regressor, loaders, tmp_path):
    profiler = TorchProfiler(dirpath=tmp_path, wait=2, warmup=3, active=3)
    trainer = make_trainer(max_epochs=1, profiler=profiler)
    with pytest.warns(UserWarning, match="wrote no trace"):
        trainer.fit(regressor(), *loaders)  # 4 batches: the run ends while warming up
    assert profiler.trace_paths == []


def test_torch_profiler_wraps_hooks_in_record_function(make_trainer):
    profiler = TorchProfiler()
    calls = []
    wrapped = profiler.wrap("on_fit_start", "callback:X", lambda *a: calls.append(a) or "r")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        assert wrapped(1, 2) == "r"
    assert calls == [(1, 2)]
    assert any(e.name == "callback:X.on_fit_start" for e in prof.events())


def test_torch_profiler_profiles_a_test_run(make_trainer, regressor, loaders, tmp_path):
    profiler = TorchProfiler(dirpath=tmp_path, row_limit=0)
    trainer = make_trainer(profiler=profiler)
    trainer.test(regressor(), dataloaders=loaders[1])
    assert len(profiler.trace_paths) == 1
    with open(profiler.trace_paths[0], encoding="utf-8") as fh:
        assert json.load(fh)["traceEvents"]
