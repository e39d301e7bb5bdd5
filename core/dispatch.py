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
from typing import TYPE_CHECKING, Any, NamedTuple

from ember.errors import add_note
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


#: ``wrap(hook_name, owner, fn) -> fn``: lets a profiler time every implementation.
Wrap = Callable[[str, str, Callable[..., Any]], Callable[..., Any]]


class EvalHooks(NamedTuple):
    """The hooks of one evaluation stage (validation or test), picked by
    :meth:`Dispatch.evaluation`, so the loop names none from a string."""

    start: Hook
    epoch_start: Hook
    batch_start: Hook
    batch_end: Hook
    epoch_end: Hook
    end: Hook


class Dispatch:
    """Attribute ``X`` is the tuple of callables for hook ``X``.

    Every hook is declared below with its type, so a misspelt hook name at a
    fire site is a type error (and an ``AttributeError`` at run time);
    ``tests/meta/test_wall.py`` keeps the declarations equal to the
    hookspecs. ``owners`` maps ``id(callable)`` to ``(hook,
    owner)``: only an error reads it (:func:`note_origin`), to say whose
    implementation raised."""

    add_commands: Hook
    on_after_backward: Hook
    on_before_backward: Hook
    on_before_optimizer_step: Hook
    on_before_zero_grad: Hook
    on_exception: Hook
    on_fit_end: Hook
    on_fit_start: Hook
    on_load_checkpoint: Hook
    on_log_hyperparams: Hook
    on_log_metrics: Hook
    on_predict_batch_end: Hook
    on_predict_batch_start: Hook
    on_predict_end: Hook
    on_predict_epoch_end: Hook
    on_predict_epoch_start: Hook
    on_predict_start: Hook
    on_sanity_check_end: Hook
    on_sanity_check_start: Hook
    on_save_checkpoint: Hook
    on_test_batch_end: Hook
    on_test_batch_start: Hook
    on_test_end: Hook
    on_test_epoch_end: Hook
    on_test_epoch_start: Hook
    on_test_start: Hook
    on_train_batch_end: Hook
    on_train_batch_start: Hook
    on_train_end: Hook
    on_train_epoch_end: Hook
    on_train_epoch_start: Hook
    on_train_start: Hook
    on_validation_batch_end: Hook
    on_validation_batch_start: Hook
    on_validation_end: Hook
    on_validation_epoch_end: Hook
    on_validation_epoch_start: Hook
    on_validation_start: Hook
    register_roles: Hook
    setup: Hook
    teardown: Hook

    def __init__(self, pm: PluginManager, module: Any = None, module_base: type | None = None, wrap: Wrap | None = None) -> None:
        self.owners: dict[int, tuple[str, str]] = {}
        for name in _HOOK_NAMES:
            owned = resolve_owned(pm, name, module, module_base)
            if wrap is not None:
                fns = tuple(wrap(name, owner, fn) for owner, fn in owned)
            else:
                fns = tuple(fn for _, fn in owned)
            for (owner, _), fn in zip(owned, fns, strict=True):
                self.owners[id(fn)] = (name, owner)
            setattr(self, name, fns)

    def __getattr__(self, name: str) -> Hook:  # only reached for unknown names
        raise AttributeError(f"{name!r} is not an ember hook")

    def evaluation(self, stage: str) -> EvalHooks:
        """The hooks of ``stage``: ``"validate"`` (also the sanity check) or ``"test"``."""
        if stage == "validate":
            return EvalHooks(
                self.on_validation_start,
                self.on_validation_epoch_start,
                self.on_validation_batch_start,
                self.on_validation_batch_end,
                self.on_validation_epoch_end,
                self.on_validation_end,
            )
        if stage == "test":
            return EvalHooks(
                self.on_test_start, self.on_test_epoch_start, self.on_test_batch_start, self.on_test_batch_end, self.on_test_epoch_end, self.on_test_end
            )
        raise ValueError(f"no evaluation hooks for stage {stage!r}: 'validate' or 'test'")


# --------------------------------------------------------------------------- who raised

NOTE_PREFIX = "ember: raised in "


def note_origin(exc: BaseException, dispatch: Dispatch | None, pm: PluginManager, objects: tuple[Any, ...]) -> None:
    """Add a note to ``exc`` naming the hook implementation it came out of: a
    callback's or logger's class, a plugin with its distribution and version,
    or a method of one of ``objects`` (the user's module and data module).

    Called only once an error propagates out of a run, so the steps pay
    nothing: the traceback's frames say which callable the kernel was
    calling (a local of the calling frame whose code is the next frame's)."""
    if any(str(n).startswith(NOTE_PREFIX) for n in getattr(exc, "__notes__", ())):
        return
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    where = None
    for i in range(len(frames) - 1):
        outer, inner = frames[i], frames[i + 1]
        if dispatch is not None:
            for value in outer.f_locals.values():
                entry = dispatch.owners.get(id(value))
                if entry is not None and _code_of(value) is inner.f_code:
                    hook, owner = entry
                    if owner == "pluggy":
                        owner = _pluggy_owner(frames[i + 1 :]) or "a hook wrapper"
                    where = _describe(hook, owner, pm, objects)
                    break
        if where is None:
            where = _user_method(inner, objects)
        if where is not None:
            add_note(exc, NOTE_PREFIX + where)
            return


def _code_of(fn: Any) -> Any:
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None and callable(fn):  # a callable object
        call = type(fn).__call__
        code = getattr(getattr(call, "__func__", call), "__code__", None)
    return code


def _pluggy_owner(frames: list[Any]) -> str | None:
    from pluggy import HookImpl

    for outer, inner in zip(frames, frames[1:], strict=False):
        for value in outer.f_locals.values():
            if isinstance(value, HookImpl) and _code_of(value.function) is inner.f_code:
                return value.plugin_name
    return None


def _user_method(frame: Any, objects: tuple[Any, ...]) -> str | None:
    """``"hook 'training_step' of MyModule"`` when ``frame`` runs a method of
    one of ``objects`` that the user's class defines (not ember's base)."""
    this = frame.f_locals.get("self")
    if this is None or not any(this is o for o in objects):
        return None
    name = frame.f_code.co_name
    fn = getattr(getattr(type(this), name, None), "__func__", getattr(type(this), name, None))
    where = str(getattr(fn, "__module__", ""))
    if _code_of(fn) is not frame.f_code or (where.startswith("ember.") and not where.startswith("ember.plugins.")):
        return None  # not a method at all, or one of ember's base classes
    dist, version = _distribution(type(this).__module__)
    return f"hook {name!r} of {_class_name(this)}" + (f", from distribution {dist} {version}".rstrip() if dist else "")


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__qualname__} ({cls.__module__})"


def _describe(hook: str, owner: str, pm: PluginManager, objects: tuple[Any, ...]) -> str:
    kind, _, rest = owner.partition(":")
    source = pm.sources.get(owner)
    if kind in ("callback", "logger") and rest:
        plugin = pm.get_plugin(owner)
        obj = getattr(plugin, "callback", None)
        what = f"{kind} {_class_name(obj) if obj is not None else rest.split('#')[0]}"
        dist = _distribution(source.target if source is not None else "")
    elif kind == "module" and rest:
        obj = next((o for o in objects if type(o).__name__ == rest), None)
        return f"hook {hook!r} of {_class_name(obj) if obj is not None else rest}"
    else:
        plugin = pm.get_plugin(owner)
        named = not owner.isdigit() or plugin is None  # pluggy names an unnamed plugin object by its id()
        what = f"plugin {owner!r}" if named else f"plugin {getattr(plugin, '__name__', None) or _class_name(plugin)}"
        if source is not None and source.distribution:
            dist = (source.distribution, source.version)
        else:
            dist = _distribution(source.target if source is not None and source.target else owner)
    name, version = dist
    return f"hook {hook!r} of {what}" + (f", from distribution {name} {version}".rstrip() if name else "")


def _distribution(module_name: str) -> tuple[str, str]:
    """The installed distribution providing ``module_name`` and its version,
    for an error report. The user's own code (no distribution metadata beside
    its package) is recognised without scanning the installed metadata."""
    import os
    import sys
    from importlib import metadata

    from ember.plugin_manager import distribution_of

    top = module_name.partition(".")[0]
    if top == "ember":
        from ember import __version__

        return "ember", __version__
    path = getattr(sys.modules.get(top), "__file__", None) or ""
    folder = os.path.dirname(os.path.dirname(path) if os.path.basename(path) == "__init__.py" else path)
    try:
        installed = path and any(n.endswith((".dist-info", ".egg-info")) for n in os.listdir(folder))
    except OSError:
        installed = False
    name = distribution_of(module_name) if installed else ""
    if not name:
        return "", ""
    try:
        return name, metadata.version(name)
    except metadata.PackageNotFoundError:
        return name, ""
