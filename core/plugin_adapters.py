"""How ember's objects face pluggy: the ``hookimpl`` marker, the hook names,
and the adapters that let a :class:`~ember.callback.Callback` method (which may
take a prefix of a hook's arguments) serve as a hook implementation.
Re-exported by :mod:`ember.plugin_manager`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pluggy

from ember import hookspecs
from ember.callback import Callback

hookimpl = pluggy.HookimplMarker("ember")

_HOOK_NAMES: frozenset[str] = frozenset(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "ember_spec"))


def _positional_capacity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` accepts (a large number for *args)."""
    count = 0
    for param in inspect.signature(fn).parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return 1 << 30
        if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def spec_argnames(hook_name: str) -> tuple[str, ...]:
    return tuple(inspect.signature(getattr(hookspecs, hook_name)).parameters)


def positional_adapter(method: Callable[..., Any], argnames: tuple[str, ...], skip: int = 0) -> Callable[..., Any]:
    """Wrap ``method`` so it can be called with the hook's full positional
    arguments: the first ``skip`` are dropped, and arguments beyond what the
    method accepts are not passed (Lightning's batch hooks leave out
    ``dataloader_idx``). The wrapper carries the hook's signature, so pluggy
    calls it like any other implementation."""
    wanted = min(_positional_capacity(method), len(argnames) - skip)
    stop = skip + wanted
    if skip == 0 and stop == len(argnames):

        def adapter(*args: Any) -> Any:
            return method(*args)

    else:

        def adapter(*args: Any) -> Any:
            return method(*args[skip:stop])

    adapter.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in argnames]
    )
    adapter.__name__ = getattr(method, "__name__", "hook")
    adapter.__qualname__ = adapter.__name__
    adapter.ember_target = method  # type: ignore[attr-defined]
    adapter.ember_exact = skip == 0 and stop == len(argnames)  # type: ignore[attr-defined]
    return adapter


def overridden_hooks(obj: Any, base: type) -> list[str]:
    """Hook names that ``type(obj)`` overrides relative to ``base``."""
    cls = type(obj)
    return [n for n in sorted(_HOOK_NAMES) if hasattr(base, n) and getattr(cls, n, None) is not getattr(base, n)]


class _CallbackPlugin:
    """The face a :class:`Callback` shows pluggy: one hook implementation per
    overridden method, with the hook's signature."""

    def __init__(self, callback: Callback) -> None:
        self.callback = callback
        for name in overridden_hooks(callback, Callback):
            adapter = positional_adapter(getattr(callback, name), spec_argnames(name))
            setattr(self, name, hookimpl(adapter))
