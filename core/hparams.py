"""``save_hyperparameters`` support shared by Module and DataModule."""

from __future__ import annotations

import copy
import inspect
import types
from typing import Any


class AttributeDict(dict):  # type: ignore[type-arg]
    """A dict whose keys are also attributes: ``hparams.lr``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"No hyperparameter {key!r}; saved: {', '.join(self) or 'none'}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def init_args_of(frame: types.FrameType) -> dict[str, Any]:
    """The arguments the function running in ``frame`` was called with
    (``self`` excluded, ``**kwargs`` flattened)."""
    code = frame.f_code
    local_vars = frame.f_locals
    n_args = code.co_argcount + code.co_kwonlyargcount
    names = list(code.co_varnames[:n_args])
    args = {n: local_vars[n] for n in names if n in local_vars}
    args.pop("self", None)
    args.pop("__class__", None)
    if code.co_flags & inspect.CO_VARKEYWORDS:
        var_kw = code.co_varnames[n_args + (1 if code.co_flags & inspect.CO_VARARGS else 0)]
        args.update(local_vars.get(var_kw, {}))
    return args


class HyperparametersMixin:
    """Gives ``save_hyperparameters()`` and ``hparams``."""

    #: Checkpoint key of the saved hyperparameters (and Lightning's names for
    #: the keys of their container's name and type, kept for ported code).
    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    _hparams: AttributeDict | None = None
    _hparams_initial: AttributeDict | None = None

    def save_hyperparameters(
        self, *args: Any, ignore: str | list[str] | None = None, frame: types.FrameType | None = None, logger: bool = True
    ) -> None:
        """Record the ``__init__`` arguments as hyperparameters.

        With no positional arguments every ``__init__`` argument is saved; with
        names (``save_hyperparameters("lr", "width")``) only those; with a dict
        or namespace, its contents. ``ignore`` drops names. Saved values go to
        checkpoints (so ``load_from_checkpoint`` can rebuild the object) and to
        the loggers when ``logger`` is true.
        """
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        init_args = init_args_of(frame) if frame is not None else {}
        ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
        if not args:
            chosen = dict(init_args)
        else:
            chosen = {}
            for arg in args:
                if isinstance(arg, str):
                    if arg not in init_args:
                        raise ValueError(
                            f"save_hyperparameters({arg!r}): {arg!r} is not an __init__ argument; they are: {', '.join(init_args)}"
                        )
                    chosen[arg] = init_args[arg]
                elif isinstance(arg, dict):
                    chosen.update(arg)
                elif hasattr(arg, "__dict__"):
                    chosen.update(vars(arg))
                else:
                    raise TypeError(f"save_hyperparameters accepts names, dicts or namespaces, not {type(arg).__name__}")
        for name in ignored:
            chosen.pop(name, None)
        # Modules passed as arguments are weights, not hyperparameters.
        chosen = {k: v for k, v in chosen.items() if not hasattr(v, "state_dict")}
        hparams = AttributeDict(chosen)
        object.__setattr__(self, "_hparams", hparams)
        object.__setattr__(self, "_hparams_initial", copy.deepcopy(hparams))
        object.__setattr__(self, "_log_hyperparams", logger)

    def remove_ignored_hparams(self, ignore_list: list[str]) -> None:
        """Drop ``ignore_list`` from the saved hyperparameters (e.g. names a
        base class saved that a subclass does not take)."""
        for store in (self._hparams, self._hparams_initial):
            for name in ignore_list:
                if store is not None:
                    store.pop(name, None)

    @property
    def hparams(self) -> AttributeDict:
        if self._hparams is None:
            object.__setattr__(self, "_hparams", AttributeDict())
        return self._hparams  # type: ignore[return-value]

    @property
    def hparams_initial(self) -> AttributeDict:
        return copy.deepcopy(self._hparams_initial) if self._hparams_initial is not None else AttributeDict()


def checkpoint_safe(value: Any) -> Any:
    """``value`` restricted to what ``torch.load(weights_only=True)`` accepts:
    numbers, strings, None, tensors, and lists/tuples/dicts of those. Other
    objects become their ``repr`` so that saving never makes a checkpoint
    unloadable."""
    import torch

    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(checkpoint_safe(v) for v in value) if not hasattr(value, "_fields") else [checkpoint_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: checkpoint_safe(v) for k, v in value.items()}
    if isinstance(value, torch.dtype):
        return str(value)
    return repr(value)


def json_default(value: Any) -> Any:
    """``json.dump(..., default=json_default)``: makes hyperparameters
    JSON-friendly without failing on odd values (tensors and arrays become
    lists, sets and tuples lists, namespaces dicts, anything else its repr).
    The loggers that write an ``hparams.json`` use it."""
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        try:
            return value.tolist()
        except Exception:  # pragma: no cover - exotic array types
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        return vars(value)
    return repr(value)
