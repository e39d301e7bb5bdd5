"""The seven scenarios of the logger conformance suite, as a pytest test class.

Subclass :class:`LoggerConformance` with a ``spec``
(:class:`~ember.logger_conformance.LoggerSpec`); pytest collects the
subclass (its name starts with ``Test``) and runs every scenario against the
logger. Each one fits :func:`ConformanceModule` for real, with a recorder
logger beside the one under test that keeps exactly what the trainer handed
the loggers, then reads the store back through ``spec.read_back`` and
compares, step by step.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, ClassVar

import pytest

from ember.logger_conformance import (
    STEPS_PER_EPOCH,
    LoggerSpec,
    _module_class,
    _recorder,
    assert_stored,
    collapse,
    loader,
    lost_since,
    make_trainer,
    read_child,
    run_child,
)

__all__ = ["LoggerConformance"]

_PREPARED: set[str] = set()


class LoggerConformance:
    """Base class of a logger's conformance tests; set ``spec`` in a subclass.

    1. ``test_short_run_without_hyperparameters``: 2 epochs, 8 steps, nothing
       forces a flush before the run ends.
    2. ``test_long_run_crossing_flush_thresholds``: ``spec.flush_options``,
       24 steps of 30 ms; read back during the run (within ``spec.kill_bound``)
       and after it (complete).
    3. ``test_several_loggers_at_once``: two instances and a ``CSVLogger``.
    4. ``test_validate_test_predict_without_fit``.
    5. ``test_run_ending_in_an_exception``: everything before it is there,
       status ``failed``.
    6. ``test_sigterm_then_resume`` (slow): a real process preempted with
       SIGTERM, resumed by a second one: the same run, the same history as
       an uninterrupted run's, no step missing or repeated.
    7. ``test_sigkill_loss_is_bounded`` (slow): a real process killed mid-run;
       the loss is measured and must be within ``spec.kill_bound``.
    """

    spec: ClassVar[LoggerSpec]

    @pytest.fixture(autouse=True)
    def _conformance_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key, value in self.spec.env.items():
            monkeypatch.setenv(key, value)
        if self.spec.name not in _PREPARED:  # one-time start-up costs go to the set-up phase, not the first test
            with tempfile.TemporaryDirectory() as tmp:  # a first fit pays for imports and warm-up
                make_trainer(tmp, [], epochs=1).fit(_module_class()(), loader(1, 0))
            if self.spec.prepare is not None:
                self.spec.prepare()
            _PREPARED.add(self.spec.name)

    # ------------------------------------------------------------------ helpers
    def fit(self, root: str, loggers: list[Any], epochs: int = 2, module: Any = None, steps: int = STEPS_PER_EPOCH, **kw: Any) -> Any:
        trainer = make_trainer(root, loggers, epochs=epochs, **kw)
        trainer.fit(module if module is not None else _module_class()(), loader(steps, 0), loader(2, 1))
        return trainer

    def check(self, logger: Any, save_dir: str, recorder: Any, what: str, status: str | None = "success") -> None:
        stored = self.spec.read_back(self.spec.handle(logger, save_dir))
        assert_stored(collapse(stored.series), recorder.series(), f"{self.spec.name}, {what}")
        if self.spec.records_status and status is not None:
            assert stored.status == status, f"{self.spec.name}, {what}: run status {stored.status!r}, expected {status!r}"

    # ------------------------------------------------------------------ 1-5: in process
    def test_short_run_without_hyperparameters(self, tmp_path: Any) -> None:
        save_dir = str(tmp_path / "store")
        logger, recorder = self.spec.build(save_dir), _recorder()
        self.fit(str(tmp_path), [logger, recorder])
        assert [s for s, _ in recorder.series()["train_loss"]] == list(range(1, 9))
        self.check(logger, save_dir, recorder, "a short run without hyperparameters")

    def test_long_run_crossing_flush_thresholds(self, tmp_path: Any) -> None:
        from ember.callback import Callback

        spec, save_dir = self.spec, str(tmp_path / "store")
        logger, recorder = spec.build(save_dir, **spec.flush_options), _recorder()
        bound, probes = spec.kill_bound(spec.flush_options), []

        class Probe(Callback):
            """Reads the store back in the middle of the run: what is missing
            must be within the bound a SIGKILL would lose."""

            def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
                if trainer.global_step in (10, 17, 23) and logger.version is not None:
                    handle = spec.handle(logger, save_dir)
                    handle.extra["running"] = True  # still being written: read what is there now
                    stored = spec.read_back(handle)
                    probes.append((trainer.global_step, *lost_since(recorder.calls, stored.series, time.time())))

        module = _module_class()(sleep=0.03)
        self.fit(str(tmp_path), [logger, recorder], epochs=3, module=module, steps=8, callbacks=[Probe()])
        for step, calls, seconds in probes:
            assert bound.allows(calls, seconds, slack=0.5), (
                f"{spec.name}: at step {step}, {calls} logging calls ({seconds:.2f} s) were not in the store yet; bound {bound}"
            )
        self.check(logger, save_dir, recorder, f"a 24-step run with {dict(spec.flush_options)}")

    def test_several_loggers_at_once(self, tmp_path: Any) -> None:
        from ember.plugins.loggers import CSVLogger

        a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
        a, b, csv, recorder = self.spec.build(a_dir), self.spec.build(b_dir), CSVLogger(str(tmp_path / "csv")), _recorder()
        self.fit(str(tmp_path), [a, csv, b, recorder])
        self.check(a, a_dir, recorder, "the first of two instances beside a CSVLogger")
        self.check(b, b_dir, recorder, "the second of two instances beside a CSVLogger")
        from ember.logger_conformance import Handle
        from ember.logger_readback import read_csv

        stored = read_csv(Handle(csv.save_dir, csv.log_dir, csv.version, csv.name))
        assert_stored(collapse(stored.series), recorder.series(), "the CSVLogger beside it")

    def test_validate_test_predict_without_fit(self, tmp_path: Any) -> None:
        save_dir = str(tmp_path / "store")
        logger, recorder = self.spec.build(save_dir), _recorder()
        trainer = make_trainer(str(tmp_path), [logger, recorder])
        module = _module_class()()
        trainer.validate(module, loader(2, 1))
        trainer.test(module, loader(2, 2))
        trainer.predict(module, loader(2, 3))
        assert set(recorder.series()) >= {"val_loss", "test_loss"}
        self.check(logger, save_dir, recorder, "validate, test and predict without a fit")

    def test_run_ending_in_an_exception(self, tmp_path: Any) -> None:
        save_dir = str(tmp_path / "store")
        logger, recorder = self.spec.build(save_dir), _recorder()
        with pytest.raises(RuntimeError, match="failing at step 6"):
            self.fit(str(tmp_path), [logger, recorder], module=_module_class()(fail_at=6))
        assert [s for s, _ in recorder.series()["train_loss"]] == list(range(1, 7))
        self.check(logger, save_dir, recorder, "a run that raised at step 7", status="failed")

    # ------------------------------------------------------------------ 6-7: real processes
    @pytest.mark.slow
    def test_sigterm_then_resume(self, tmp_path: Any) -> None:
        from ember.errors import EXIT_PREEMPTED

        reference_dir, reference, ref_recorder = str(tmp_path / "ref"), None, _recorder()
        reference = self.spec.build(reference_dir)
        self.fit(reference_dir, [reference, ref_recorder], epochs=3)
        expected = self.spec.read_back(self.spec.handle(reference, reference_dir)).series

        save_dir = str(tmp_path / "run")
        job = {"save_dir": save_dir, "truth": str(tmp_path / "truth.jsonl"), "epochs": 3, "fault_tolerance": True}
        first = run_child(self.spec, **job, handle=str(tmp_path / "first.json"), signal="SIGTERM", signal_at=6)
        assert first.returncode == EXIT_PREEMPTED, f"the preempted run exited with {first.returncode}:\n{first.stderr[-3000:]}"
        second = run_child(self.spec, **job, handle=str(tmp_path / "second.json"), auto_resume=True)
        assert second.returncode == 0, second.stderr[-3000:]
        h1, _, _ = read_child(self.spec, str(tmp_path / "first.json"), job["truth"])
        h2, stored, _ = read_child(self.spec, str(tmp_path / "second.json"), job["truth"])
        assert (h2.log_dir, h2.version) == (h1.log_dir, h1.version), f"{self.spec.name}: the resumed run writes elsewhere: {h1} -> {h2}"
        assert_stored(
            stored.series, expected, f"{self.spec.name}, preempted at step 6 and resumed (compared with an uninterrupted run)", rel=1e-5
        )
        if self.spec.records_status:
            assert stored.status == "success"

    @pytest.mark.slow
    @pytest.mark.parametrize("setting", ["defaults", "flush_options"])
    def test_sigkill_loss_is_bounded(self, tmp_path: Any, setting: str) -> None:
        """Kill a run with SIGKILL at step 150 of 200 (defaults, ~1 ms steps),
        or at step 40 of 48 (``flush_options``, 30 ms steps); measure what the
        store lacks of what was handed to the logger."""
        options = {} if setting == "defaults" else dict(self.spec.flush_options)
        at, steps, sleep = (150, 100, 0.0) if setting == "defaults" else (40, 24, 0.03)
        job = {"save_dir": str(tmp_path / "run"), "truth": str(tmp_path / "truth.jsonl"), "handle": str(tmp_path / "h.json")}
        done = run_child(self.spec, **job, options=options, signal="SIGKILL", signal_at=at, steps_per_epoch=steps, sleep=sleep)
        killed_at = time.time()
        assert done.returncode == -9, f"the run was not killed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        handle, stored, calls = read_child(self.spec, job["handle"], job["truth"], killed=True)
        kill_time = max(t for t, _, _ in calls)
        lost_calls, lost_seconds = lost_since([tuple(c) for c in calls], stored.series, kill_time)
        bound = self.spec.kill_bound(options)
        report = f"{self.spec.name} ({setting}): SIGKILL at step {at} lost {lost_calls} of {len(calls)} logging calls, {lost_seconds:.2f} s"
        print(report)
        os.makedirs(os.environ.get("EMBER_CONFORMANCE_REPORT_DIR", str(tmp_path)), exist_ok=True)
        with open(os.path.join(os.environ.get("EMBER_CONFORMANCE_REPORT_DIR", str(tmp_path)), "sigkill.txt"), "a") as fh:
            fh.write(report + f" (bound {bound}; {killed_at - kill_time:.2f} s to the kill)\n")
        assert bound.allows(lost_calls, lost_seconds, slack=1.0), f"{report}; bound {bound}"
