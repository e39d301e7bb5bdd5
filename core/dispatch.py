"""Hook dispatch resolved once per run.

For every hook the kernel emits, :class:`Dispatch` holds a tuple of plain
callables taking the hook's arguments positionally: the plugins' and
callbacks' implementations in pluggy's call order, then the module's own
method if it overrides one. Firing a hook is a ``for`` loop over a tuple, and
a hook nobody implements is an empty tuple that the loops test before they
even build the arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.plugin_manager import _HOOK_NAMES, positional_adapter, spec_argnames

if TYPE_CHECKING:
    from ember.plugin_manager import PluginManager

Hook = tuple[Callable[..., Any], ...]

#: Hooks the user's module may override, with Lightning's module signatures
#: (the trainer and module arguments are not passed to it).
MODULE_HOOKS: frozenset[str] = frozenset(
    n
    for n in _HOOK_NAMES
    if n not in {"register_roles", "on_exception", "on_sanity_check_start", "on_sanity_check_end", "on_log_metrics", "on_log_hyperparams"}
)


def _from_impl(impl: Any, argnames: tuple[str, ...]) -> Callable[..., Any]:
    fn = impl.function
    if getattr(fn, "ember_exact", False):
        return fn.ember_target  # a callback method that takes every argument: call it directly
    if tuple(impl.argnames) == argnames:
        return fn
    if tuple(impl.argnames) == argnames[: len(impl.argnames)]:
        n = len(impl.argnames)
        return lambda *args: fn(*args[:n])
    index = tuple(argnames.index(a) for a in impl.argnames)
    return lambda *args: fn(*(args[i] for i in index))


def _through_pluggy(caller: Any, argnames: tuple[str, ...]) -> Callable[..., Any]:
    # Wrappers need pluggy's own machinery; keep their semantics exactly.
    return lambda *args: caller(**dict(zip(argnames, args, strict=False)))


Owned = tuple[str, Callable[..., Any]]


def resolve_owned(pm: PluginManager, name: str, module: Any = None, module_base: type | None = None) -> list[Owned]:
    """``(owner, callable)`` for hook ``name`` in firing order; the owner is the
    plugin's registered name (``callback:ModelCheckpoint``, a module path, or
    ``module:<class>`` for the user's module)."""
    argnames = spec_argnames(name)
    caller = getattr(pm.hook, name)
    impls = caller.get_hookimpls()
    if any(i.hookwrapper or i.wrapper for i in impls):
        owned: list[Owned] = [("pluggy", _through_pluggy(caller, argnames))]
    else:
        # pluggy calls the last-registered first; callbacks were registered in
        # reverse so that they fire in the order the user listed them.
        owned = [(i.plugin_name, _from_impl(i, argnames)) for i in reversed(impls)]
    if module is not None and name in MODULE_HOOKS and module_base is not None:
        method = getattr(type(module), name, None)
        if method is not None and method is not getattr(module_base, name, None):
            owned.append((f"module:{type(module).__name__}", positional_adapter(getattr(module, name), argnames, skip=2)))
    return owned


def resolve(pm: PluginManager, name: str, module: Any = None, module_base: type | None = None) -> Hook:
    """The callables for hook ``name``, in firing order."""
    return tuple(fn for _, fn in resolve_owned(pm, name, module, module_base))


#: ``wrap(hook_name, owner, fn) -> fn``: lets a profiler time every implementation.
Wrap = Callable[[str, str, Callable[..., Any]], Callable[..., Any]]


class Dispatch:
    """Attribute ``X`` is the tuple of callables for hook ``X``."""

    def __init__(self, pm: PluginManager, module: Any = None, module_base: type | None = None, wrap: Wrap | None = None) -> None:
        for name in _HOOK_NAMES:
            owned = resolve_owned(pm, name, module, module_base)
            if wrap is not None:
                fns = tuple(wrap(name, owner, fn) for owner, fn in owned)
            else:
                fns = tuple(fn for _, fn in owned)
            setattr(self, name, fns)

    def __getattr__(self, name: str) -> Hook:  # only reached for unknown names
        raise AttributeError(f"{name!r} is not an ember hook")
