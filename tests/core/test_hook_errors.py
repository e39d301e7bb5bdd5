"""An error raised inside a hook keeps its traceback and gets a note naming
the hook and whose implementation raised: a callback, a logger, a plugin (with
its distribution and version), or the user's module or data module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ember


def _fit_error(trainer: Any, module: Any, *args: Any, **kwargs: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        trainer.fit(module, *args, **kwargs)
    return info.value


def _notes(exc: BaseException) -> list[str]:
    return [n for n in getattr(exc, "__notes__", []) if n.startswith("ember:")]


def _innermost(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name if tb is not None else ""


class Boom(ember.Callback):
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 1:
            raise RuntimeError("callback failed")

    def on_exception(self, trainer: Any, module: Any, exception: BaseException) -> None:
        self.seen.append(_notes(exception))


def test_callback_hook(h: Any, make_trainer: Any) -> None:
    boom = Boom()
    trainer = make_trainer(max_epochs=1, callbacks=[boom])
    exc = _fit_error(trainer, h.Regressor(), h.loader(16, 4))
    assert str(exc) == "callback failed"
    expected = f"ember: raised in hook 'on_train_batch_end' of callback Boom ({Boom.__module__})"
    assert _notes(exc) == [expected]
    assert _innermost(exc) == "on_train_batch_end"  # the traceback still ends where the bug is
    assert boom.seen == [[expected]]  # on_exception already sees the note


def test_the_step_path_calls_the_callback_itself(h: Any, make_trainer: Any) -> None:
    """Nothing is wrapped to get the notes: the per-step tuple holds the callback's own method."""
    boom = Boom()
    trainer = make_trainer(max_epochs=1, callbacks=[boom])
    with pytest.raises(RuntimeError):
        trainer.fit(h.Regressor(), h.loader(16, 4))
    assert boom.on_train_batch_end in trainer._dispatch.on_train_batch_end


class FailingLogger(ember.Logger):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise OSError("disk full")


def test_logger_hook(h: Any, make_trainer: Any) -> None:
    trainer = make_trainer(max_epochs=1, logger=FailingLogger(), log_every_n_steps=1)
    exc = _fit_error(trainer, h.Regressor(), h.loader(16, 4))
    assert isinstance(exc, OSError)
    assert _notes(exc) == [f"ember: raised in hook 'on_log_metrics' of logger FailingLogger ({__name__})"]
    assert _innermost(exc) == "log_metrics"


class FailingPlugin:
    @ember.hookimpl
    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        raise KeyError("plugin failed")


class Wrapper:
    @ember.hookimpl(wrapper=True)
    def on_train_epoch_start(self, trainer: Any, module: Any) -> Any:
        return (yield)


@pytest.mark.parametrize("with_wrapper", [False, True], ids=["plain", "through-pluggy"])
def test_plugin_object_hook(h: Any, make_trainer: Any, with_wrapper: bool) -> None:
    plugins = [FailingPlugin(), Wrapper()] if with_wrapper else [FailingPlugin()]
    exc = _fit_error(make_trainer(max_epochs=1, plugins=plugins), h.Regressor(), h.loader(16, 4))
    assert _notes(exc) == [f"ember: raised in hook 'on_train_epoch_start' of plugin FailingPlugin ({__name__})"]


def test_installed_plugin_names_its_distribution(h: Any, make_trainer: Any, with_dists: Path, tmp_path: Path, monkeypatch: Any) -> None:
    # The fixture plugin appends to the file EMBER_DUMMY_MARKER names in its on_fit_start: a directory makes that fail.
    monkeypatch.setenv("EMBER_DUMMY_MARKER", str(tmp_path))
    exc = _fit_error(make_trainer(max_epochs=1), h.Regressor(), h.loader(16, 4))
    assert isinstance(exc, IsADirectoryError)
    assert _notes(exc) == ["ember: raised in hook 'on_fit_start' of plugin 'dummy', from distribution ember-dummy-plugin 0.3.1"]


def test_installed_callback_names_its_distribution(h: Any, make_trainer: Any, with_dists: Path, tmp_path: Path) -> None:
    from ember_dummy_plugin import HookCounter

    # HookCounter writes its counts to `path` in teardown: a directory makes that fail.
    trainer = make_trainer(max_epochs=1, callbacks=[HookCounter(path=str(tmp_path))], disable_plugins=["dummy"])
    exc = _fit_error(trainer, h.Regressor(), h.loader(16, 4))
    assert _notes(exc) == [
        "ember: raised in hook 'teardown' of callback HookCounter (ember_dummy_plugin), from distribution ember-dummy-plugin 0.3.1"
    ]


def test_training_step(h: Any, make_trainer: Any) -> None:
    class Broken(h.Regressor):  # type: ignore[misc, name-defined]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.compute(batch)

        def compute(self, batch: Any) -> Any:
            raise ZeroDivisionError("user bug")

    exc = _fit_error(make_trainer(max_epochs=1), Broken(), h.loader(16, 4))
    # the method ember called, not the helper the bug is in (the traceback shows that)
    assert _notes(exc) == [f"ember: raised in hook 'training_step' of {Broken.__qualname__} ({__name__})"]
    assert _innermost(exc) == "compute"


def test_module_hook_and_validation_step(h: Any, make_trainer: Any) -> None:
    class EpochEnd(h.Regressor):  # type: ignore[misc, name-defined]
        def on_train_epoch_end(self) -> None:
            raise ValueError("epoch end")

    exc = _fit_error(make_trainer(max_epochs=1), EpochEnd(), h.loader(16, 4))
    assert _notes(exc) == [f"ember: raised in hook 'on_train_epoch_end' of {EpochEnd.__qualname__} ({__name__})"]

    class BadVal(h.Regressor):  # type: ignore[misc, name-defined]
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            raise ValueError("val")

    with pytest.raises(ValueError) as info:
        make_trainer().validate(BadVal(), h.loader(8, 4))
    assert _notes(info.value) == [f"ember: raised in hook 'validation_step' of {BadVal.__qualname__} ({__name__})"]


class MissingFile(ember.DataModule):
    def setup(self, stage: str) -> None:
        open("/nonexistent/data.csv")  # noqa: SIM115

    def train_dataloader(self) -> Any:
        raise AssertionError("not reached")


def test_datamodule_hook(h: Any, make_trainer: Any) -> None:
    exc = _fit_error(make_trainer(max_epochs=1), h.Regressor(), datamodule=MissingFile())
    assert isinstance(exc, FileNotFoundError)
    assert _notes(exc) == [f"ember: raised in hook 'setup' of MissingFile ({__name__})"]


def test_errors_ember_raises_itself_get_no_note(h: Any, make_trainer: Any) -> None:
    with pytest.raises(ValueError, match="No training data") as info:
        make_trainer(max_epochs=1).fit(h.Regressor())
    assert _notes(info.value) == []
