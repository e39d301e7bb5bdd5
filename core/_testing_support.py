"""What :mod:`ember.testing` hands out, kept apart because it imports torch:
:mod:`ember.testing` itself must stay cheap to import (pytest imports it in
every project where ember is installed), so it reaches this module only from
inside a fixture or on first use of one of these names."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callback import Callback
from ember.plugin_manager import _HOOK_NAMES, spec_argnames
from ember.suggest import did_you_mean

#: The defaults ``make_trainer`` applies, each overridable by keyword.
QUIET_DEFAULTS: dict[str, Any] = {
    "max_epochs": 1,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "enable_fault_tolerance": False,
    "logger": False,
}


def quiet_trainer(root: str | os.PathLike[str], **kwargs: Any) -> ember.Trainer:
    """An :class:`ember.Trainer` writing under ``root``, with :data:`QUIET_DEFAULTS`
    for everything ``kwargs`` leaves out."""
    settings = {**QUIET_DEFAULTS, "default_root_dir": os.fspath(root), **kwargs}
    return ember.Trainer(**settings)


# --------------------------------------------------------------------------- data and model


def regression_dataset(n: int = 64, in_features: int = 4, seed: int = 0) -> TensorDataset:
    """``n`` samples of ``y = x @ w + noise`` with a fixed ``w``; the same ``seed``
    gives the same data, without touching torch's global random state."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=g)
    w = torch.linspace(-1.0, 1.0, in_features).unsqueeze(1)
    y = x @ w + 0.05 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class TinyModule(ember.Module):
    """Linear regression trained with SGD, with every step implemented:
    ``training_step`` logs ``train_loss``, ``validation_step`` ``val_loss``,
    ``test_step`` ``test_loss``, and ``predict_step`` returns predictions.
    It carries its own dataloaders (so ``trainer.fit(tiny_module)`` works);
    a :class:`TinyDataModule` passed to the trainer replaces them.
    Initialised from ``seed``: two instances start from the same weights."""

    def __init__(self, in_features: int = 4, lr: float = 0.05, n: int = 64, batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.in_features, self.lr, self.n, self.batch_size, self.seed = in_features, lr, n, batch_size, seed
        self.layer = torch.nn.Linear(in_features, 1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.layer.weight.copy_(0.1 * torch.randn(1, in_features, generator=g))
            self.layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def _loader(self, offset: int, n: int) -> DataLoader:
        return DataLoader(regression_dataset(n, self.in_features, self.seed + offset), batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, self.n)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1, max(self.n // 2, 1))

    def test_dataloader(self) -> DataLoader:
        return self._loader(2, max(self.n // 2, 1))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(3, max(self.n // 4, 1))


class TinyDataModule(ember.DataModule):
    """The data :class:`TinyModule` trains on, as a :class:`ember.DataModule`
    (train ``n`` samples, validation and test ``n // 2``, predict ``n // 4``)."""

    def __init__(self, n: int = 64, batch_size: int = 16, in_features: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.n, self.batch_size, self.in_features, self.seed = n, batch_size, in_features, seed

    def _loader(self, offset: int, n: int) -> DataLoader:
        return DataLoader(regression_dataset(n, self.in_features, self.seed + offset), batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, self.n)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1, max(self.n // 2, 1))

    def test_dataloader(self) -> DataLoader:
        return self._loader(2, max(self.n // 2, 1))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(3, max(self.n // 4, 1))


# --------------------------------------------------------------------------- hook recorder

#: every hook a Callback can implement
CALLBACK_HOOKS: tuple[str, ...] = tuple(sorted(n for n in _HOOK_NAMES if hasattr(Callback, n)))


class HookCall(NamedTuple):
    """One recorded hook call: its name and a summary of its arguments
    (trainer and module left out; tensors as ``"Tensor[8, 4]"``, tables as
    their sorted keys)."""

    name: str
    args: dict[str, Any]


def summarize(value: Any, depth: int = 0) -> Any:
    """A small, comparable stand-in for a hook argument."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)}"
    if isinstance(value, dict):
        return tuple(sorted(str(k) for k in value))
    if isinstance(value, (list, tuple)) and depth < 2:
        return tuple(summarize(v, depth + 1) for v in value[:8]) + (("...",) if len(value) > 8 else ())
    return type(value).__name__


class HookRecorder(Callback):
    """A callback that records every hook it receives, in order, as
    :class:`HookCall` ``(name, args)`` tuples.

    >>> recorder = HookRecorder()                  # or only some: HookRecorder(hooks=["on_fit_start"])
    >>> trainer = make_trainer(callbacks=[recorder])  # doctest: +SKIP
    >>> recorder.assert_order(["setup", "on_fit_start", "on_fit_end"])  # doctest: +SKIP
    """

    def __init__(self, hooks: Iterable[str] | None = None) -> None:
        self.calls: list[HookCall] = []
        if hooks is None:
            self.hooks: frozenset[str] = frozenset(CALLBACK_HOOKS)
        else:
            wanted = list(hooks)
            for name in wanted:
                if name not in CALLBACK_HOOKS:
                    raise ValueError(f"{name!r} is not a callback hook.{did_you_mean(name, CALLBACK_HOOKS)} The hooks are listed in ember.hookspecs.")
            self.hooks = frozenset(wanted)

    def _record(self, name: str, args: Sequence[Any]) -> None:
        if name not in self.hooks:
            return
        argnames = spec_argnames(name)
        summary = {a: summarize(v) for a, v in zip(argnames, args, strict=False) if a not in ("trainer", "module")}
        self.calls.append(HookCall(name, summary))

    # -- reading the record ---------------------------------------------------
    def names(self) -> list[str]:
        """The hook names in the order they fired."""
        return [c.name for c in self.calls]

    def count(self, name: str) -> int:
        """How many times hook ``name`` fired."""
        return sum(1 for c in self.calls if c.name == name)

    def calls_of(self, name: str) -> list[dict[str, Any]]:
        """The argument summaries of every call of ``name``."""
        return [c.args for c in self.calls if c.name == name]

    def clear(self) -> None:
        self.calls.clear()

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[HookCall]:
        return iter(self.calls)

    def assert_order(self, expected: Sequence[str], *, exact: bool = False) -> None:
        """Assert that the hooks in ``expected`` fired in this order. By default
        other hooks may fire in between (``expected`` is a subsequence of what
        was recorded); ``exact=True`` compares the whole record."""
        names = self.names()
        if exact:
            if names != list(expected):
                first = next((i for i, (a, b) in enumerate(zip(names, expected, strict=False)) if a != b), min(len(names), len(expected)))
                raise AssertionError(
                    f"hook order differs at position {first}: expected {list(expected)[first : first + 3]}, "
                    f"recorded {names[first : first + 3]}.\nrecorded: {_compact(names)}"
                )
            return
        pos = 0
        for i, name in enumerate(expected):
            try:
                pos = names.index(name, pos) + 1
            except ValueError:
                after = f" after {expected[i - 1]!r} (call #{pos - 1})" if i else ""
                why = "never fired" if name not in names else f"did not fire{after}"
                raise AssertionError(
                    f"expected hook {name!r} (item {i} of the expected order) {why}.\nrecorded: {_compact(names)}"
                ) from None


def _compact(names: list[str]) -> str:
    """``a, b x3, c``: the record with runs of one hook folded."""
    out: list[str] = []
    i = 0
    while i < len(names):
        j = i
        while j < len(names) and names[j] == names[i]:
            j += 1
        out.append(names[i] + (f" x{j - i}" if j - i > 1 else ""))
        i = j
    return ", ".join(out) or "(nothing)"


def _recording_method(name: str) -> Callable[..., None]:
    def hook(self: HookRecorder, *args: Any) -> None:
        self._record(name, args)

    hook.__name__ = hook.__qualname__ = name
    return hook


for _name in CALLBACK_HOOKS:
    setattr(HookRecorder, _name, _recording_method(_name))
del _name


# --------------------------------------------------------------------------- resume

# assert_survives_resume lives in its own module; served from here as before.
from ember._testing_resume import ResumeReport, assert_survives_resume, state_difference  # noqa: E402,F401
