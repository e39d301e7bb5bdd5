"""What each ``Trainer`` argument accepts, as one declarative table.

:data:`ARGUMENTS` maps every argument of ``Trainer.__init__`` to an
:class:`Accepts`: a test of the value and the words that say what is valid.
The trainer checks all of them once, at construction, so a bad value fails
with one line naming the argument and its valid range instead of training
nothing (``max_epochs=-5``) or failing deep inside ``fit``. Adding a Trainer
argument means adding a row here (a test checks that every argument has one)::

    "reload_dataloaders_every_n_epochs": Accepts(int_at_least(0), "an int >= 0"),

:data:`COMBINATIONS` holds the checks that involve several arguments.
"""

from __future__ import annotations

import datetime
import inspect
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ember.errors import UserError
from ember.suggest import closest


class TrainerArgumentError(UserError, ValueError):
    """A ``Trainer`` argument whose value is outside what it accepts."""


class UnknownTrainerArgument(UserError, TypeError):
    """A keyword that is not a ``Trainer`` argument."""


@dataclass(frozen=True)
class Accepts:
    """``test(value)`` is true for the values an argument accepts; ``valid``
    describes them for the message ("an int >= -1 (-1: no limit)")."""

    test: Callable[[Any], bool]
    valid: str
    optional: bool = False  # ``None`` is accepted too (it means the default)

    def __call__(self, value: Any) -> bool:
        return (self.optional and value is None) or self.test(value)


# -- building blocks -------------------------------------------------------------------------------
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and v >= low


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: any(v is c or (type(v) is type(c) and v == c) for c in choices)


def either(*tests: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: any(t(v) for t in tests)


def batch_count(value: Any) -> bool:
    """An int number of batches, a fraction in [0, 1], or a whole float > 1."""
    if is_int(value):
        return value >= 0
    return isinstance(value, float) and (0.0 <= value <= 1.0 or (value > 1.0 and value.is_integer()))


def _is_str_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(x, str) for x in value)


def _devices(value: Any) -> bool:
    if is_int(value):
        return value == -1 or value > 0
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, (list, tuple)) and bool(value) and all(is_int(x) and x >= 0 for x in value)


def _loggers(value: Any) -> bool:
    from ember.callback import Logger

    items = value if isinstance(value, (list, tuple)) else [value]
    return isinstance(value, bool) or all(isinstance(x, Logger) for x in items)


def _callbacks(value: Any) -> bool:
    from ember.callback import Callback

    items = value if isinstance(value, (list, tuple)) else [value]
    return all(isinstance(x, Callback) for x in items)


def _max_time(value: Any) -> bool:
    try:
        seconds = parse_max_time(value)
    except (TypeError, ValueError):
        return False
    return seconds is None or seconds >= 0


def _name_or_object(value: Any) -> bool:
    return isinstance(value, str) or not (is_number(value) or isinstance(value, bool) or value is None)


def _anything(value: Any) -> bool:
    return True


_BATCHES = "an int >= 0 (batches) or a float in [0.0, 1.0] (a fraction of the batches)"

#: argument -> what it accepts. ``optional=True``: ``None`` (the default) is accepted too.
ARGUMENTS: dict[str, Accepts] = {
    "accelerator": Accepts(_name_or_object, "a name ('auto', 'cpu', 'cuda', ...) or an accelerator object"),
    "strategy": Accepts(_name_or_object, "a name ('auto', 'ddp', 'fsdp', ...) or a strategy object"),
    "devices": Accepts(_devices, "'auto', -1 (all), a count >= 1, or a list of device indices", optional=True),
    "num_nodes": Accepts(int_at_least(1), "an int >= 1"),
    "precision": Accepts(either(lambda v: isinstance(v, str), is_int), "a precision name such as '32-true', 'bf16-mixed' or '16-mixed'", optional=True),
    "logger": Accepts(_loggers, "True, False, an ember.Logger or a list of them", optional=True),
    "callbacks": Accepts(_callbacks, "an ember.Callback or a list of them", optional=True),
    "fast_dev_run": Accepts(either(is_bool, int_at_least(0)), "a bool or an int >= 0 (number of batches)"),
    "max_epochs": Accepts(int_at_least(-1), "an int >= 0, or -1 for no limit", optional=True),
    "min_epochs": Accepts(int_at_least(0), "an int >= 0", optional=True),
    "max_steps": Accepts(int_at_least(-1), "an int >= 0, or -1 for no limit"),
    "min_steps": Accepts(int_at_least(0), "an int >= 0", optional=True),
    "max_time": Accepts(_max_time, "a duration >= 0: 'DD:HH:MM:SS', a datetime.timedelta, a dict of timedelta arguments, or seconds", optional=True),
    "limit_train_batches": Accepts(batch_count, _BATCHES, optional=True),
    "limit_val_batches": Accepts(batch_count, _BATCHES, optional=True),
    "limit_test_batches": Accepts(batch_count, _BATCHES, optional=True),
    "limit_predict_batches": Accepts(batch_count, _BATCHES, optional=True),
    "overfit_batches": Accepts(batch_count, _BATCHES),
    "val_check_interval": Accepts(
        either(int_at_least(1), lambda v: isinstance(v, float) and 0.0 < v <= 1.0),
        "an int >= 1 (every that many training batches) or a float in (0.0, 1.0] (a fraction of the epoch)",
        optional=True,
    ),
    "check_val_every_n_epoch": Accepts(int_at_least(1), "an int >= 1, or None to validate only every val_check_interval batches", optional=True),
    "num_sanity_val_steps": Accepts(int_at_least(-1), "an int >= 0, or -1 for all validation batches", optional=True),
    "log_every_n_steps": Accepts(int_at_least(1), "an int >= 1", optional=True),
    "enable_checkpointing": Accepts(is_bool, "True or False", optional=True),
    "enable_progress_bar": Accepts(is_bool, "True or False", optional=True),
    "enable_model_summary": Accepts(is_bool, "True or False", optional=True),
    "enable_fault_tolerance": Accepts(is_bool, "True or False", optional=True),
    "auto_resume": Accepts(is_bool, "True or False"),
    "profiler": Accepts(_name_or_object, "a profiler name ('simple', 'advanced', 'pytorch') or object", optional=True),
    "accumulate_grad_batches": Accepts(int_at_least(1), "an int >= 1"),
    "gradient_clip_val": Accepts(lambda v: is_number(v) and v >= 0 and not math.isnan(v), "a number >= 0 (0 or None: no clipping)", optional=True),
    "gradient_clip_algorithm": Accepts(one_of("norm", "value"), "'norm' or 'value'", optional=True),
    "deterministic": Accepts(either(is_bool, one_of("warn")), "True, False or 'warn'", optional=True),
    "benchmark": Accepts(is_bool, "True or False", optional=True),
    "inference_mode": Accepts(is_bool, "True or False"),
    "detect_anomaly": Accepts(is_bool, "True or False"),
    "default_root_dir": Accepts(lambda v: isinstance(v, (str, os.PathLike)), "a directory path", optional=True),
    "plugins": Accepts(_anything, "plugin objects or names", optional=True),
    "disable_plugins": Accepts(_is_str_sequence, "a list of plugin names", optional=True),
    "autoload_plugins": Accepts(is_bool, "True or False", optional=True),
    "use_distributed_sampler": Accepts(is_bool, "True or False"),
    "sync_batchnorm": Accepts(is_bool, "True or False"),
    "reload_dataloaders_every_n_epochs": Accepts(int_at_least(0), "an int >= 0 (0: never reload)"),
    "barebones": Accepts(is_bool, "True or False"),
    "enable_autolog_hparams": Accepts(is_bool, "True or False"),
}

#: ``(test of all arguments, message)``: when the test is false, the message
#: (formatted with the arguments) is the error.
COMBINATIONS: list[tuple[Callable[[dict[str, Any]], bool], str]] = [
    (
        lambda a: not (a.get("check_val_every_n_epoch", 1) is None and isinstance(a.get("val_check_interval"), float)),
        "Trainer(check_val_every_n_epoch=None, val_check_interval={val_check_interval!r}) validates every val_check_interval batches across epochs, "
        "so val_check_interval must be an int, not a fraction of an epoch.",
    ),
    (
        lambda a: a.get("min_epochs") is None or a.get("max_epochs") in (None, -1) or a["min_epochs"] <= a["max_epochs"],
        "Trainer(min_epochs={min_epochs!r}, max_epochs={max_epochs!r}): training cannot run more epochs than max_epochs; lower min_epochs or raise max_epochs.",
    ),
    (
        lambda a: a.get("min_steps") is None or a.get("max_steps", -1) == -1 or a["min_steps"] <= a["max_steps"],
        "Trainer(min_steps={min_steps!r}, max_steps={max_steps!r}): training cannot take more steps than max_steps; lower min_steps or raise max_steps.",
    ),
]


def check_arguments(values: dict[str, Any]) -> None:
    """Raise :class:`TrainerArgumentError` for the first argument in ``values``
    (names as in :data:`ARGUMENTS`) that is outside its range."""
    for name, accepts in ARGUMENTS.items():
        if name in values and not accepts(values[name]):
            raise TrainerArgumentError(f"Trainer({name}={_show(values[name])}) is not valid: {name} takes {accepts.valid}.")
    for test, message in COMBINATIONS:
        if not test(values):
            raise TrainerArgumentError(message.format_map(values))


_NAMES: dict[type, tuple[frozenset[str], float]] = {}


def check_names(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse extra positional arguments and unknown keywords of ``cls(...)``
    with the closest valid argument. A subclass whose ``__init__`` passes
    ``**kwargs`` on accepts its own names and those of the classes above it."""
    known = _NAMES.get(cls)
    if known is None:
        found: set[str] = set()
        positional: float = -1
        for klass in cls.__mro__:
            if "__init__" not in klass.__dict__:
                continue
            params = [p for n, p in inspect.signature(klass.__init__).parameters.items() if n != "self"]  # type: ignore[misc]
            if positional == -1:
                takes_any = any(p.kind is p.VAR_POSITIONAL for p in params)
                positional = math.inf if takes_any else sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
            found.update(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                break
        _NAMES[cls] = known = (frozenset(found), positional)
    names, positional = known
    if len(args) > positional:
        takes = "keyword arguments only" if not positional else f"at most {int(positional)} positional arguments"
        raise UnknownTrainerArgument(f"{cls.__name__}() takes {takes}, e.g. {cls.__name__}(max_epochs=3); got {len(args)} positional.")
    for key in kwargs:
        if key not in names:
            match = closest(key, names)
            hint = f" Did you mean {match}={_show(kwargs[key])}?" if match else f" The arguments are: {', '.join(sorted(names))}."
            raise UnknownTrainerArgument(f"{cls.__name__}() has no argument {key!r}.{hint}")


def parse_max_time(value: Any) -> float | None:
    """Seconds from ``max_time``: 'DD:HH:MM:SS', a timedelta, a dict of
    timedelta arguments, or a number of seconds."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return datetime.timedelta(**value).total_seconds()
    if is_number(value):
        return float(value)
    match = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})", str(value))
    if not match:
        raise ValueError(f"max_time={value!r}: use 'DD:HH:MM:SS', a datetime.timedelta, a dict for timedelta, or seconds.")
    d, h, m, s = map(int, match.groups())
    return datetime.timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) <= 4:
        inner = ", ".join(_show(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    text = repr(value)
    return text if len(text) <= 60 and " at 0x" not in text else f"<{type(value).__name__}>"
