"""The checked stack: :class:`Stack`, its :class:`Component` entries and its
:class:`PluginsSpec`, with the Trainer's defaults for what it leaves unset."""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.stack.keys import DEFAULT, RESERVED_TRAINER_ARGS


@dataclass
class Component:
    """A class the stack instantiates: the model, the data module, a callback
    or a logger (these last two by registered ``name`` or by ``class_path``)."""

    key: str  # "model", "data", "callbacks[0]", ...
    class_path: str | None = None
    name: str | None = None
    init_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.class_path is not None:
            out["class_path"] = self.class_path
        out["init_args"] = copy.deepcopy(self.init_args)
        return out


@dataclass
class PluginsSpec:
    """The ``[plugins]`` section: which plugins the Trainer loads."""

    autoload: bool | None = None  # None: not set (ember's default, true)
    enable: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"autoload": True if self.autoload is None else self.autoload, "enable": list(self.enable), "disable": list(self.disable)}


@dataclass
class Stack:
    """A checked stack: what :func:`~ember.stack.load_stack` returns and
    :func:`~ember.stack.build` instantiates."""

    model: Component | None = None
    data: Component | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Component] = field(default_factory=list)
    loggers: list[Component] = field(default_factory=list)
    plugins: PluginsSpec = field(default_factory=PluginsSpec)
    seed_everything: int | None = None
    #: requirement strings (``"ember-foo>=1.2"``) checked by
    #: :func:`ember.plugin_manager.check_required` before a run
    required_plugins: list[str] = field(default_factory=list)
    source: Path | None = None
    #: dotted key -> "default", the stack file, "environment (EMBER_...)" or "command line"
    provenance: dict[str, str] = field(default_factory=dict)
    #: where class paths are imported from (the stack file's directory, else the cwd)
    import_root: Path | None = None
    #: the values of the top-level keys plugins declared (``add_commands(stack_keys)``), checked
    plugin_keys: dict[str, Any] = field(default_factory=dict)
    #: the merged raw data with the origin of every leaf, for error messages
    _raw: Any = field(default=None, repr=False, compare=False)
    #: the declarations behind ``plugin_keys`` (:class:`~ember.stack.plugin_keys.StackKeys`)
    _stack_keys: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.seed_everything is not None:
            out["seed_everything"] = self.seed_everything
        if self.required_plugins:
            out["required_plugins"] = list(self.required_plugins)
        if self.model is not None:
            out["model"] = self.model.to_dict()
        if self.data is not None:
            out["data"] = self.data.to_dict()
        out["trainer"] = copy.deepcopy(self.trainer)
        out["plugins"] = self.plugins.to_dict()
        out["callbacks"] = [c.to_dict() for c in self.callbacks]
        out["loggers"] = [c.to_dict() for c in self.loggers]
        out.update(copy.deepcopy(self.plugin_keys))
        return out

    def origin(self, key: str) -> str:
        """Where the value at dotted ``key`` came from (``default`` if unset)."""
        if key in self.provenance:
            return self.provenance[key]
        for k, v in self.provenance.items():
            if k.startswith(key + ".") or k.startswith(key + "["):
                return v
        return DEFAULT

    def autoload_settings(self, environ: Mapping[str, str] | None = None) -> Any:
        """The plugin manager's :class:`~ember.plugin_manager.AutoloadSettings`
        for this stack: the environment's, plus the ``[plugins]`` section."""
        from ember.plugin_manager import AutoloadSettings

        base = AutoloadSettings.from_env(dict(os.environ if environ is None else environ))
        where = ("plugins.enable", "plugins.disable")
        if self._raw is not None:
            where = (self._raw.describe(("plugins", "enable")), self._raw.describe(("plugins", "disable")))
        return base.merged(enable=self.plugins.enable, disable=self.plugins.disable, autoload=self.plugins.autoload, where=where)

    def check_required_plugins(self) -> None:
        """Raise :class:`~ember.plugin_manager.RequiredPluginsError` unless every
        ``required_plugins`` entry is installed in a matching version."""
        if not self.required_plugins:
            return
        from ember.plugin_manager import check_required

        where = "required_plugins"
        if self._raw is not None:
            where = self._raw.describe(("required_plugins",))
        check_required(self.required_plugins, where=where)

    def resolved(self, trainer_cls: Any = None) -> list[tuple[str, Any, str]]:
        """Every value of the stack as ``(dotted key, value, origin)``, the
        Trainer's defaults included (when ``ember.Trainer`` can be imported)."""
        rows: list[tuple[str, Any, str]] = []

        def add(key: str, value: Any) -> None:
            rows.append((key, value, self.origin(key)))

        add("seed_everything", self.seed_everything)
        add("required_plugins", list(self.required_plugins))
        for comp in (self.model, self.data):
            if comp is None:
                continue
            add(f"{comp.key}.class_path", comp.class_path)
            _leaves(f"{comp.key}.init_args", comp.init_args, add)
        defaults = trainer_defaults(trainer_cls)
        for key in sorted(set(defaults) | set(self.trainer)):
            if key in self.trainer:
                add(f"trainer.{key}", self.trainer[key])
            else:
                rows.append((f"trainer.{key}", defaults[key], DEFAULT))
        add("plugins.autoload", True if self.plugins.autoload is None else self.plugins.autoload)
        add("plugins.enable", list(self.plugins.enable))
        add("plugins.disable", list(self.plugins.disable))
        for comp in [*self.callbacks, *self.loggers]:
            if comp.name is not None:
                add(f"{comp.key}.name", comp.name)
            else:
                add(f"{comp.key}.class_path", comp.class_path)
            _leaves(f"{comp.key}.init_args", comp.init_args, add)
        for name, value in self.plugin_keys.items():
            _leaves(name, value, add)
        return rows


def _leaves(prefix: str, value: Any, add: Callable[[str, Any], None]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _leaves(f"{prefix}.{k}", v, add)
    else:
        add(prefix, value)


def trainer_defaults(trainer_cls: Any = None) -> dict[str, Any]:
    """The Trainer's keyword arguments and their defaults (those a stack's
    ``[trainer]`` may set); empty when the Trainer cannot be imported."""
    try:
        params = trainer_parameters(trainer_cls)
    except Exception:
        return {}
    return {
        name: (None if p.default is inspect.Parameter.empty else p.default)
        for name, p in params.items()
        if name not in RESERVED_TRAINER_ARGS
        and name != "logger"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def trainer_class(trainer_cls: Any = None) -> Any:
    """``trainer_cls``, or :class:`ember.Trainer` (which imports torch) when ``None``."""
    if trainer_cls is None:
        from ember.trainer import Trainer as trainer_cls  # imports torch
    return trainer_cls


def trainer_parameters(trainer_cls: Any = None) -> dict[str, inspect.Parameter]:
    """The parameters of the Trainer's ``__init__``, ``self`` left out."""
    params = dict(inspect.signature(trainer_class(trainer_cls).__init__).parameters)
    params.pop("self", None)
    return params
