"""The logger conformance suite: real fits, read back from the logger's own store.

A logger passes when everything the trainer handed it is in its store,
step by step, however the run goes. Describe the logger with a
:class:`LoggerSpec` and subclass :class:`LoggerConformance` in a test module::

    from ember.testing import LoggerConformance, LoggerSpec

    class TestMyLogger(LoggerConformance):
        spec = LoggerSpec(name="mine", factory="my_pkg.testing:make_logger", read_back=my_pkg.testing.read_back)

pytest then runs seven scenarios against it (see :class:`LoggerConformance`);
the two that kill a process are marked ``slow``. ``python -m
ember.logger_conformance`` is the child process those two start.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# LoggerConformance, the test class, is served on first use from ember.logger_conformance_suite (see __getattr__).
__all__ = ["Handle", "KillBound", "LoggerSpec", "Stored", "assert_stored", "collapse", "lost_since"]

Series = dict[str, list[tuple[int, float]]]
STEPS_PER_EPOCH = 4


@dataclass
class Stored:
    """What a store holds: per metric, ``(step, value)`` points as the store
    keeps them; ``status`` (``"success"``, ``"failed"``, ``"interrupted"``)
    where the store records one, else ``None``."""

    series: Series
    status: str | None = None


@dataclass
class Handle:
    """Where a logger wrote: enough for a reader to find the run again, in
    this process or after the writing process is gone. ``extra["running"]``
    is true when the writer may not have closed the run (read during the run,
    or after a kill): read what is there, without waiting for an end."""

    save_dir: str
    log_dir: str | None
    version: Any
    name: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KillBound:
    """What a SIGKILL may lose: at most ``calls`` logging calls (``None``: no
    count bound) and nothing logged more than ``seconds`` before the kill
    (``None``: no time bound)."""

    calls: int | None
    seconds: float | None

    def allows(self, lost_calls: int, lost_seconds: float, slack: float) -> bool:
        return (self.calls is None or lost_calls <= self.calls) and (self.seconds is None or lost_seconds <= self.seconds + slack)


@dataclass(frozen=True)
class LoggerSpec:
    """A logger, as the suite runs it.

    :param name: shown in test ids and messages.
    :param factory: ``"module:function"``; ``function(save_dir, **options)``
        returns a new logger writing under ``save_dir``. A string, because
        the killed-process scenarios build the logger in a child process.
    :param read_back: ``read_back(handle) -> Stored``, through the store's own
        library (a fresh reader: no state shared with the logger).
    :param flush_options: factory options with small flush thresholds
        (counts and seconds) that a 24-step run with 30 ms steps crosses.
    :param kill_bound: ``kill_bound(options) -> KillBound``: the documented
        worst-case loss under SIGKILL for those factory options.
    :param records_status: the store keeps a run status (checked when true).
    :param env: environment variables for every fit (and the child processes).
    :param prepare: called once per test class before any fit (warm-up, templates).
    :param handle_extra: ``handle_extra(logger) -> dict`` added to the :class:`Handle`.
    """

    name: str
    factory: str
    read_back: Callable[[Handle], Stored]
    flush_options: Mapping[str, Any] = field(default_factory=dict)
    kill_bound: Callable[[Mapping[str, Any]], KillBound] = lambda options: KillBound(None, None)
    records_status: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    handle_extra: Callable[[Any], dict[str, Any]] | None = None

    def build(self, save_dir: str, **options: Any) -> Any:
        return load_factory(self.factory)(save_dir, **options)

    def handle(self, logger: Any, save_dir: str) -> Handle:
        extra = self.handle_extra(logger) if self.handle_extra is not None else {}
        return Handle(save_dir, getattr(logger, "log_dir", None), logger.version, logger.name, extra)


def load_factory(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"LoggerSpec.factory={path!r}: write it as 'module:function'.")
    return getattr(importlib.import_module(module), attr)


# --------------------------------------------------------------------------- comparing
def collapse(series: Mapping[str, list[tuple[int, float]]]) -> Series:
    """Per metric: a point repeated at the same step with the same value kept
    once (stores differ there: W&B merges a step, CSV keeps each call), then
    sorted by step (stable)."""
    out: Series = {}
    for key, points in series.items():
        kept: list[tuple[int, float]] = []
        for step, value in points:
            if (int(step), float(value)) not in kept:
                kept.append((int(step), float(value)))
        out[key] = sorted(kept, key=lambda p: p[0])
    return out


def assert_stored(got: Series, expected: Series, what: str, rel: float = 1e-6) -> None:
    """Same metrics, same steps in the same order, values equal to float32 precision."""
    problems = []
    for key in sorted(set(got) | set(expected)):
        g, e = got.get(key, []), expected.get(key, [])
        if [s for s, _ in g] != [s for s, _ in e]:
            problems.append(f"{key}: stored steps {[s for s, _ in g]}, logged {[s for s, _ in e]}")
            continue
        bad = [(s, a, b) for (s, a), (_, b) in zip(g, e, strict=True) if not math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)]
        if bad:
            problems.append(f"{key}: (step, stored, logged) differ at {bad[:3]}")
    if problems:
        raise AssertionError(f"{what}:\n  " + "\n  ".join(problems))


def lost_since(calls: list[tuple[float, int, dict[str, float]]], stored: Series, now: float) -> tuple[int, float]:
    """How many logging calls (``(time, step, metrics)``) have a value missing
    from ``stored``, and how long before ``now`` the oldest of them was made."""
    have = {key: set(points) for key, points in collapse(stored).items()}
    lost = [t for t, step, metrics in calls if any((step, float(v)) not in have.get(k, ()) for k, v in metrics.items())]
    return len(lost), (now - min(lost)) if lost else 0.0


# --------------------------------------------------------------------------- the run under test
def _module_class() -> type:
    import torch

    import ember

    class ConformanceModule(ember.Module):
        """Linear regression; logs ``train_loss`` every step, ``train_mean``
        per epoch, ``val_loss`` and ``test_loss``; no hyperparameters."""

        def __init__(self, fail_at: int | None = None, sleep: float = 0.0) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.layer = torch.nn.Linear(4, 1)
            self.fail_at, self.sleep = fail_at, sleep

        def _loss(self, batch: Any) -> Any:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.fail_at is not None and self.global_step == self.fail_at:
                raise RuntimeError(f"conformance: failing at step {self.fail_at}")
            if self.sleep:
                time.sleep(self.sleep)
            loss = self._loss(batch)
            self.log("train_loss", loss)
            self.log("train_mean", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", self._loss(batch))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.log("test_loss", self._loss(batch))

        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            return self.layer(batch[0])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return ConformanceModule


def loader(n_batches: int, seed: int) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * n_batches, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(4 * n_batches, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _recorder(truth_file: str | None = None) -> Any:
    from ember.callback import Logger

    class Recorder(Logger):
        """What the trainer handed the loggers, in order, with the time; also
        appended (and flushed) to ``truth_file`` so a killed run's record survives."""

        def __init__(self) -> None:
            self.calls: list[tuple[float, int, dict[str, float]]] = []
            self._fh = open(truth_file, "a", encoding="utf-8") if truth_file else None  # noqa: SIM115

        @property
        def state_key(self) -> str:
            return "ConformanceRecorder"

        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            call = (time.time(), int(step), {k: float(v) for k, v in metrics.items()})
            self.calls.append(call)
            if self._fh is not None:
                self._fh.write(json.dumps(call) + "\n")
                self._fh.flush()

        def series(self) -> Series:
            out: Series = {}
            for _, step, metrics in self.calls:
                for key, value in metrics.items():
                    out.setdefault(key, []).append((step, value))
            return collapse(out)

    return Recorder()


def make_trainer(root: str, loggers: list[Any], epochs: int = 2, **kwargs: Any) -> Any:
    import ember

    settings: dict[str, Any] = {
        "default_root_dir": root,
        "max_epochs": epochs,
        "log_every_n_steps": 1,
        "logger": loggers,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "enable_fault_tolerance": False,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
        "devices": 1,
        **kwargs,
    }
    return ember.Trainer(**settings)


# --------------------------------------------------------------------------- child processes
def run_child(spec: LoggerSpec, **job: Any) -> subprocess.CompletedProcess[str]:
    """Run one fit in a fresh interpreter (``python -m ember.logger_conformance``)."""
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    job = {"factory": spec.factory, **job}
    return subprocess.run(
        [sys.executable, "-m", "ember.logger_conformance", json.dumps(job)], env=env, capture_output=True, text=True, timeout=300
    )


def _child_main(job: dict[str, Any]) -> None:
    from ember.callback import Callback

    save_dir = job["save_dir"]
    logger = load_factory(job["factory"])(save_dir, **job.get("options", {}))
    truth = _recorder(job["truth"])

    def write_handle() -> None:
        extra = {"tracking_uri": logger.tracking_uri} if hasattr(logger, "tracking_uri") else {}
        handle = {"save_dir": save_dir, "log_dir": getattr(logger, "log_dir", None), "version": logger.version, "name": logger.name}
        with open(job["handle"], "w", encoding="utf-8") as fh:
            json.dump({**handle, "extra": extra}, fh)

    class Signaller(Callback):
        """Sends this process ``job["signal"]`` after step ``job["signal_at"]``."""

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == job.get("signal_at"):
                write_handle()
                os.kill(os.getpid(), getattr(signal, job.get("signal", "SIGTERM")))

    trainer = make_trainer(
        save_dir,
        [logger, truth],
        epochs=job.get("epochs", 2),
        callbacks=[Signaller()],
        enable_fault_tolerance=job.get("fault_tolerance", False),
        auto_resume=job.get("auto_resume", False),
    )
    try:
        trainer.fit(_module_class()(sleep=job.get("sleep", 0.0)), loader(job.get("steps_per_epoch", STEPS_PER_EPOCH), 0), loader(2, 1))
    finally:
        write_handle()


def read_child(spec: LoggerSpec, handle_file: str, truth_file: str, killed: bool = False) -> tuple[Handle, Stored, list[Any]]:
    with open(handle_file, encoding="utf-8") as fh:
        data = json.load(fh)
    handle = Handle(data["save_dir"], data["log_dir"], data["version"], data["name"], {**data["extra"], "running": killed})
    with open(truth_file, encoding="utf-8") as fh:
        calls = [tuple(json.loads(line)) for line in fh if line.strip()]
    return handle, spec.read_back(handle), calls


def __getattr__(name: str) -> Any:
    if name == "LoggerConformance":  # defined beside, with the scenarios; it imports the helpers above
        from ember.logger_conformance_suite import LoggerConformance

        return LoggerConformance
    raise AttributeError(f"module 'ember.logger_conformance' has no attribute {name!r}")


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
