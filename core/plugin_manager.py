"""The plugin manager: built-in plugins, entry-point plugins, callbacks.

Built-ins are registered from :data:`BUILTIN_PLUGINS`, an explicit tuple.
External plugins are the entry points of the ``ember.plugins`` group of every
installed distribution. A broken external plugin never takes ember down: it
is recorded as a :class:`PluginFailure` (with its distribution and version),
reported as a warning by the trainer and listed by ``ember plugins``.

Environment variables:

``EMBER_DISABLE_PLUGIN_AUTOLOAD=1``
    Load no entry-point plugin except those named in ``EMBER_PLUGINS`` (or the
    stack's ``plugins.enable``).
``EMBER_PLUGINS=a,b``
    Allow-list: load only these entry-point plugins (entry-point or
    distribution names, or ``dist:entry`` to pick one distribution when two
    publish the same entry-point name).
``EMBER_DISABLE_PLUGINS=a,b``
    Never load or register these plugins (built-in names work too).
"""

from __future__ import annotations

import importlib
import os
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import pluggy

from ember import hookspecs
from ember.callback import Callback
from ember.plugin_adapters import _HOOK_NAMES as _HOOK_NAMES  # re-exported: dispatch, tests and plugins import these from here
from ember.plugin_adapters import _CallbackPlugin
from ember.plugin_adapters import hookimpl as hookimpl
from ember.plugin_adapters import overridden_hooks as overridden_hooks
from ember.plugin_adapters import positional_adapter as positional_adapter
from ember.plugin_adapters import spec_argnames as spec_argnames
from ember.roles import RoleRegistry
from ember.suggest import did_you_mean

ENTRY_POINT_GROUP = "ember.plugins"

#: ember's own plugins, registered in this order before any external one.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "ember.plugins.accelerators.cpu",
    "ember.plugins.accelerators.cuda",
    "ember.plugins.accelerators.mps",
    "ember.plugins.strategies.single_device",
    "ember.plugins.strategies.ddp",
    "ember.plugins.strategies.deepspeed",
    "ember.plugins.strategies.fsdp",
    "ember.plugins.precision.true_precision",
    "ember.plugins.precision.mixed",
    "ember.plugins.precision.half",
    "ember.plugins.checkpoint_io.torch_io",
    "ember.plugins.environments.local",
    "ember.plugins.environments.torchelastic",
    "ember.plugins.environments.slurm",
    "ember.plugins.environments.lsf",
    "ember.plugins.environments.mpi",
    "ember.plugins.loggers.csv_logger",
    "ember.plugins.loggers.tensorboard",
    "ember.plugins.loggers.wandb",
    "ember.plugins.loggers.mlflow",
    "ember.plugins.callbacks.progress",
    "ember.plugins.callbacks.model_summary",
    "ember.plugins.callbacks.model_checkpoint",
    "ember.plugins.callbacks.early_stopping",
    "ember.plugins.callbacks.lr_monitor",
    "ember.plugins.callbacks.lr_finder",
    "ember.plugins.callbacks.batch_size_finder",
    "ember.plugins.callbacks.fault_tolerance",
    "ember.plugins.callbacks.throughput",
    "ember.plugins.callbacks.device_stats",
    "ember.plugins.callbacks.finetuning",
    "ember.plugins.callbacks.compile",
    "ember.plugins.profilers.simple",
    "ember.plugins.profilers.advanced",
    "ember.plugins.profilers.pytorch",
)


class PluginValidationError(Exception):
    """A plugin implements something the kernel does not know."""


class EmberPluginWarning(UserWarning):
    """An external plugin could not be loaded; ember carried on without it."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@dataclass
class PluginFailure:
    """An entry-point plugin that failed to import or register."""

    name: str
    distribution: str
    version: str
    target: str
    error: str
    traceback: str = ""
    #: what to do about it, when there is something more precise to say than
    #: "fix or uninstall it" (an incompatible plugin says which versions to install)
    fix: str = ""

    def describe(self) -> str:
        advice = self.fix or f"fix or uninstall it (pip uninstall {self.distribution})"
        return (
            f"ember plugin {self.name!r} from distribution {self.distribution} {self.version} "
            f"({self.target}) failed to load: {self.error.rstrip('.')}. ember continues without it; "
            f"{advice.rstrip('.')}, or disable it with EMBER_DISABLE_PLUGINS={self.name}."
        )


@dataclass
class PluginSource:
    """Where a registered plugin came from."""

    kind: str  # "builtin", "entrypoint", "callback", "explicit"
    distribution: str = "ember"
    version: str = ""
    target: str = ""


@dataclass
class AutoloadSettings:
    autoload: bool = True
    allow: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    #: ``"allow:NAME"`` / ``"disable:NAME"`` -> where the name was set, for messages
    origins: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AutoloadSettings:
        env = os.environ if environ is None else environ
        allow, disable = _csv(env.get("EMBER_PLUGINS")), _csv(env.get("EMBER_DISABLE_PLUGINS"))
        origins = {**{f"allow:{n}": "EMBER_PLUGINS" for n in allow}, **{f"disable:{n}": "EMBER_DISABLE_PLUGINS" for n in disable}}
        return cls(autoload=not _truthy(env.get("EMBER_DISABLE_PLUGIN_AUTOLOAD")), allow=allow, disable=disable, origins=origins)

    def merged(
        self,
        *,
        enable: Iterable[str] = (),
        disable: Iterable[str] = (),
        autoload: bool | None = None,
        where: tuple[str, str] = ("Trainer(plugins=...)", "Trainer(disable_plugins=...)"),
    ) -> AutoloadSettings:
        enable, disable = list(enable), list(disable)
        origins = {**{f"allow:{n}": where[0] for n in enable}, **{f"disable:{n}": where[1] for n in disable}, **self.origins}
        return AutoloadSettings(
            autoload=self.autoload if autoload is None else (autoload and self.autoload),
            allow=[*self.allow, *enable],
            disable=[*self.disable, *disable],
            origins=origins,
        )


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with ember's specs, sources and failure reports."""

    def __init__(self) -> None:
        super().__init__("ember")
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.sources: dict[str, PluginSource] = {}
        self.disabled: list[str] = []

    # -- registration ----------------------------------------------------
    def register(self, plugin: Any, name: str | None = None, source: PluginSource | None = None) -> str | None:  # type: ignore[override]
        try:
            registered = super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            from ember.plugin_names import argument_mismatch

            raise PluginValidationError(argument_mismatch(exc, name or self.get_canonical_name(plugin), source)) from None
        if registered is None:
            return None
        try:
            self._check_known_hooks(plugin, registered)
        except PluginValidationError:
            self.unregister(plugin)
            raise
        self.sources[registered] = source or PluginSource("explicit", distribution="", version="")
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        name = name or self.get_name(plugin)
        self.sources.pop(name or "", None)
        return super().unregister(plugin, name)

    def _check_known_hooks(self, plugin: Any, name: str) -> None:
        for caller in self.get_hookcallers(plugin) or []:
            if caller.name not in _HOOK_NAMES:
                raise PluginValidationError(
                    f"Plugin {name!r} implements {caller.name!r}, which is not an ember hook.{did_you_mean(caller.name, _HOOK_NAMES)} "
                    "The hooks are listed in ember.hookspecs (docs/reference/hooks.md)."
                )

    def register_callback(self, callback: Callback, kind: str = "callback") -> str:
        """Register a callback (or logger) instance; returns its plugin name."""
        base = f"{kind}:{type(callback).__qualname__}"
        name, n = base, 1
        while self.has_plugin(name):
            n += 1
            name = f"{base}#{n}"
        # The distribution is looked up only when someone lists plugins: it scans
        # every installed distribution, too slow for each Trainer.
        self.register(_CallbackPlugin(callback), name, PluginSource(kind, distribution="", target=type(callback).__module__))
        return name

    def load_builtins(self, disable: Iterable[str] = (), strict: bool = True, modules: Iterable[str] = BUILTIN_PLUGINS) -> None:
        """Register ``modules`` (default :data:`BUILTIN_PLUGINS`) minus ``disable``,
        by module or short name. With ``strict=False`` a built-in that fails is
        recorded as a :class:`PluginFailure` instead of raising, for ``ember plugins``."""
        from ember import __version__

        skip = set(disable)
        for modname in modules:
            if modname in skip or modname.rsplit(".", 1)[-1] in skip:
                self.disabled.append(modname)
                continue
            if self.has_plugin(modname):
                continue
            try:
                self.register(importlib.import_module(modname), modname, PluginSource("builtin", "ember", __version__, modname))
            except Exception as exc:
                if strict:
                    raise
                self.failures.append(
                    PluginFailure(modname, "ember", __version__, modname, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )

    def load_entrypoints(self, settings: AutoloadSettings | None = None, group: str = ENTRY_POINT_GROUP) -> None:
        """Load the entry points of ``group`` (``ember.plugins``, or
        ``ember.commands`` for :mod:`ember.commands`) that ``settings`` allow. A
        name in the allow- or deny-list that matches no installed plugin is
        warned about, with the closest name. An entry-point name published by
        two distributions loads neither (a recorded failure naming both),
        unless the allow-list picks one with ``dist:entry``."""
        from ember.plugin_names import collision, selects, warn_unknown

        settings = settings or AutoloadSettings.from_env()
        found = _entry_points(group)
        if group == ENTRY_POINT_GROUP:
            warn_unknown(settings, found)
        candidates = []
        for ep, dist_name, version in found:
            if settings.disable and selects(settings.disable, ep, dist_name):
                self.disabled.append(ep.name)
                continue
            if settings.allow and not selects(settings.allow, ep, dist_name):
                continue
            if not settings.autoload and not selects(settings.allow, ep, dist_name):
                continue
            candidates.append((ep, dist_name, version))
        reported: set[str] = set()
        qualified = [a for a in settings.allow if ":" in a]
        for ep, dist_name, version in candidates:
            rivals = [(e, d, v) for e, d, v in candidates if e.name == ep.name and d != dist_name]
            if rivals and not (selects(qualified, ep, dist_name) and not any(selects(qualified, e, d) for e, d, _ in rivals)):
                if ep.name not in reported and not any(selects(qualified, e, d) for e, d, _ in rivals):
                    reported.add(ep.name)
                    self.failures.append(collision(ep, dist_name, version, rivals))
                continue
            if self.has_plugin(ep.name):
                continue
            self._load_entrypoint(ep, dist_name, version)

    def _load_entrypoint(self, ep: Any, dist_name: str, version: str) -> None:
        refusal = incompatibility(ep, dist_name, version)
        if refusal is not None:
            self.failures.append(refusal)
            return
        try:
            plugin = ep.load()
            self.register(plugin, ep.name, PluginSource("entrypoint", dist_name, version, ep.value))
        except Exception as exc:  # a broken third-party plugin must not take ember down
            self.failures.append(
                PluginFailure(
                    name=ep.name,
                    distribution=dist_name,
                    version=version,
                    target=ep.value,
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                )
            )

    def warn_failures(self) -> None:
        for failure in self.failures:
            warnings.warn(failure.describe(), EmberPluginWarning, stacklevel=3)

    # -- roles -------------------------------------------------------------
    def build_registry(self) -> RoleRegistry:
        """Ask every plugin for its role providers, earliest-registered first, so
        a later plugin can replace a built-in name on purpose."""
        registry = RoleRegistry()
        impls = self.hook.register_roles.get_hookimpls()
        for impl in sorted(impls, key=lambda i: list(self._name2plugin).index(i.plugin_name)):
            with registry.registering_for(impl.plugin_name):
                try:
                    impl.function(registry)
                except Exception as exc:
                    source = self.sources.get(impl.plugin_name)
                    if source is None or source.kind == "builtin":
                        raise
                    self.failures.append(
                        PluginFailure(
                            impl.plugin_name,
                            source.distribution,
                            source.version,
                            source.target,
                            f"register_roles raised {type(exc).__name__}: {exc}",
                            traceback.format_exc(),
                        )
                    )
        return registry

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.get_plugin(name)
        return sorted(c.name for c in self.get_hookcallers(plugin) or [])


def distribution_of(module_name: str) -> str:
    top = module_name.split(".", 1)[0]
    try:
        dists = importlib_metadata.packages_distributions().get(top)
    except Exception:  # pragma: no cover - metadata quirks must not break registration
        dists = None
    return dists[0] if dists else ""


# --------------------------------------------------------------------------- compatibility

# --------------------------------------------------------------------------- required plugins
from ember.plugin_required import RequiredPluginsError, check_required  # noqa: E402,F401  (re-exported)
from ember.plugin_versions import declared_ember_requirement, incompatibility  # noqa: E402,F401  (re-exported)


def _entry_points(group: str = ENTRY_POINT_GROUP) -> list[tuple[Any, str, str]]:
    found = []
    for ep in importlib_metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        found.append((ep, dist.metadata["Name"] if dist else "?", dist.version if dist else "?"))
    return found


def default_plugin_manager(
    settings: AutoloadSettings | None = None,
    *,
    strict: bool = True,
    builtins: Iterable[str] = BUILTIN_PLUGINS,
    group: str = ENTRY_POINT_GROUP,
) -> PluginManager:
    """A manager with the built-ins and the (allowed) entry-point plugins: the
    one place a manager is assembled (the Trainer, stacks, ``ember plugins``
    and the command plugins of :mod:`ember.commands` all come here).

    :param strict: raise when a built-in fails (``False`` records it in
        ``pm.failures``, for reports).
    :param builtins: the built-in modules to register (the command plugins
        pass their own light tuple).
    :param group: the entry-point group to load (``ember.plugins`` or ``ember.commands``).
    """
    settings = settings or AutoloadSettings.from_env()
    pm = PluginManager()
    pm.load_builtins(settings.disable, strict=strict, modules=builtins)
    pm.load_entrypoints(settings, group=group)
    return pm
