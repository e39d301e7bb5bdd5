"""``torch.compile`` and ember.

Two ways in, one mechanism. ``trainer.fit(torch.compile(module))`` is
accepted: :func:`accept` takes the ember ``Module`` out of the
``OptimizedModule`` and has it run its compiled call in place
(``module._compiled_call_impl``, what ``torch.nn.Module.compile`` sets), with
the options given to ``torch.compile`` (backend, mode, fullgraph, dynamic).
The trainer, the strategies and the checkpoints then see the module itself,
so parameter names stay the original ones (no ``_orig_mod.`` prefix) and a
checkpoint resumes into a compiled or a plain module alike.
``module.compile()`` needs nothing: the module is already an ember Module.

The opt-in :class:`~ember.plugins.callbacks.compile.Compile` callback does
the compiling for you and reports, at the end of the run, what compiling
cost: :class:`CompileStats` reads dynamo's own records (frames compiled,
recompilations and their reasons, graph breaks and theirs, compile time).

Nothing here imports ``torch._dynamo`` unless a compiled module is in play:
a plain run pays one ``sys.modules`` lookup per ``fit``.
"""

from __future__ import annotations

import pickle
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: The prefix ``torch.compile(module).state_dict()`` gives every key.
COMPILED_PREFIX = "_orig_mod."


def is_compiled_module(obj: Any) -> bool:
    """Whether ``obj`` is what ``torch.compile(module)`` returns."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # loaded whenever torch.compile was called
    return eval_frame is not None and isinstance(obj, eval_frame.OptimizedModule)


def accept(model: Any, fn: str = "fit") -> Any:
    """The module ``trainer.<fn>(model)`` runs: for ``torch.compile(module)``
    the ember ``Module`` inside it, switched to its compiled call; anything
    else unchanged."""
    if not is_compiled_module(model):
        return model
    from ember.module import Module

    inner = model._orig_mod
    if not isinstance(inner, Module):
        raise TypeError(
            f"trainer.{fn}() got torch.compile() of a {type(inner).__name__}, which is not an ember.Module. "
            f"Compile the ember.Module itself: trainer.{fn}(torch.compile(MyModule()))."
        )
    if getattr(inner, "_compiled_call_impl", None) is None:
        # The OptimizedModule's own context, so the user's backend/mode/options apply.
        inner._compiled_call_impl = model.dynamo_ctx(inner._call_impl)
        inner.__dict__[_RECORD] = _CompiledCall(inner, model.dynamo_ctx)
    # Lightning, once imported, wraps torch.compile to keep its arguments on
    # the module (``_compile_kwargs``, for Fabric's own re-compiling). ember
    # keeps its own record above; Lightning's copy would make the module
    # unpicklable for a worker process whenever the backend is a local function.
    inner.__dict__.pop("_compile_kwargs", None)
    return inner


#: the module attribute holding the :class:`_CompiledCall` that :func:`accept` installed
_RECORD = "_ember_compiled_call"


class _CompiledCall:
    """Kept on a module :func:`accept` switched to its compiled call, so that
    a pickled copy is compiled too. ``torch.nn.Module`` drops
    ``_compiled_call_impl`` when pickled, and ``ddp_spawn`` (fsdp, deepspeed)
    pickle the module to start their worker processes: without this the
    workers would train the plain module. Unpickling reinstalls the call from
    the same dynamo context (backend, mode, options) on the copy; a context
    that does not pickle (a backend defined in a function) leaves the copy
    plain, with a warning."""

    def __init__(self, module: Any, dynamo_ctx: Any) -> None:
        self.module = module
        self.dynamo_ctx = dynamo_ctx

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.module.__dict__.get("_compiled_call_impl") is None:  # switched off since
            return _no_record, ()
        try:
            pickle.dumps(self.dynamo_ctx)
        except Exception as exc:
            warnings.warn(
                f"A copy of the compiled {type(self.module).__name__} (e.g. for a worker process) runs uncompiled: its "
                f"torch.compile backend does not pickle ({type(exc).__name__}: {exc}). Use a backend given by name, or "
                "pass the plain module with the Compile callback, which compiles in each process.",
                stacklevel=2,
            )
            return _no_record, ()
        return _reinstall, (self.module, self.dynamo_ctx)


def _reinstall(module: Any, dynamo_ctx: Any) -> _CompiledCall:
    # Runs while ``module`` is being unpickled (its state follows; torch's
    # ``__setstate__`` keeps this entry, as ``__getstate__`` left it out).
    module.__dict__["_compiled_call_impl"] = dynamo_ctx(module._call_impl)
    return _CompiledCall(module, dynamo_ctx)


def _no_record() -> None:
    return None


def strip_compiled_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the ``_orig_mod.`` prefix of a compiled module's
    keys removed (for weights saved from ``torch.compile(m).state_dict()``)."""
    n = len(COMPILED_PREFIX)
    return {k[n:] if k.startswith(COMPILED_PREFIX) else k: v for k, v in state_dict.items()}


# --------------------------------------------------------------------------- the step, compiled
class CompiledOptimizerStep:
    """What ``optimizer.step`` becomes under ``Compile(optimizer_step=True)``:
    the closure (forward, backward, unscaling, ``on_before_optimizer_step``,
    clipping) runs eagerly first, as ``torch.optim`` optimizers run it, then
    the parameter update runs through ``torch.compile``. Installed as an
    attribute of the optimizer object, so every caller (the precision
    plugin, ``GradScaler.step``, ``self.optimizers().step()``) gets it, and
    removed by :func:`restore_optimizer_step`. The optimizer's state dict,
    and with it checkpoints and resume, are untouched."""

    def __init__(self, optimizer: Any, **compile_kwargs: Any) -> None:
        import torch

        self.optimizer = optimizer
        self.eager_step = optimizer.step  # the class's step with its hooks, or an LR scheduler's wrapper of it
        #: what ``optimizer.step`` was in the object's own attributes (an LR scheduler's wrapper), to put back
        self.previous = optimizer.__dict__.get("step")
        if getattr(self.eager_step, "_wrapped_by_lr_sched", False):
            self._wrapped_by_lr_sched = True  # what the scheduler checks for on every step
        self.compiled_update = torch.compile(self._update, **compile_kwargs)

    def _update(self) -> Any:
        return self.eager_step()

    def __call__(self, closure: Any = None, **kwargs: Any) -> Any:
        if kwargs:  # e.g. GradScaler's grad_scale/found_inf for fused optimizers: not compiled
            return self.eager_step(closure, **kwargs)
        loss = None
        if closure is not None:
            import torch

            with torch.enable_grad():
                loss = closure()
        self.compiled_update()
        return loss


#: optimizers whose ``step`` calls the closure more than once: left eager
EAGER_ONLY_OPTIMIZERS = ("LBFGS",)


def compile_optimizer_step(optimizer: Any, **compile_kwargs: Any) -> bool:
    """Replace ``optimizer.step`` by a :class:`CompiledOptimizerStep`; False
    (nothing done) for an optimizer that re-evaluates its closure (LBFGS) or
    one already compiled."""
    if type(optimizer).__name__ in EAGER_ONLY_OPTIMIZERS or isinstance(optimizer.__dict__.get("step"), CompiledOptimizerStep):
        return False
    optimizer.step = CompiledOptimizerStep(optimizer, **compile_kwargs)
    return True


def restore_optimizer_step(optimizer: Any) -> None:
    """Undo :func:`compile_optimizer_step` (the class's ``step`` again)."""
    step = optimizer.__dict__.get("step")
    if isinstance(step, CompiledOptimizerStep):
        if step.previous is None:
            del optimizer.__dict__["step"]
        else:
            optimizer.__dict__["step"] = step.previous


def compile_training_step(module: Any, **compile_kwargs: Any) -> None:
    """Run ``module.training_step`` (forward and loss together) through
    ``torch.compile``: an attribute of the module object, which every
    strategy calls (the trainer's step directly; DDP's and DeepSpeed's
    wrappers through :class:`~ember.plugins.strategies.ddp.TrainingStepModule`;
    FSDP as a registered forward method); removed by
    :func:`restore_training_step`.

    Under FSDP the strategy has made ``training_step`` an FSDP forward method
    (an attribute of the object that gathers the root's parameters around
    the step): the compiled step gets the same wrapper, outside the compiled
    code, and :func:`restore_training_step` puts the strategy's back."""
    import torch

    previous = module.__dict__.get("training_step")
    compiled = torch.compile(type(module).training_step.__get__(module), **compile_kwargs)
    compiled._ember_compiled_step = True
    compiled._ember_previous_step = previous
    module.__dict__["training_step"] = compiled
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if previous is not None and fsdp is not None and isinstance(module, fsdp.FSDPModule):
        fsdp.register_fsdp_forward_method(module, "training_step")  # wraps the compiled step (and keeps its attributes)


def restore_training_step(module: Any) -> None:
    """Undo :func:`compile_training_step`."""
    step = module.__dict__.get("training_step")
    if getattr(step, "_ember_compiled_step", False):
        previous = step._ember_previous_step
        if previous is None:
            del module.__dict__["training_step"]
        else:
            module.__dict__["training_step"] = previous


# --------------------------------------------------------------------------- the report
@dataclass
class CompileStats:
    """What compiling cost between :meth:`start` and :meth:`stop`, read from
    dynamo's records (``torch._dynamo.utils``)."""

    frames: int = 0  #: frame compilations (first compiles and recompilations)
    recompilations: int = 0  #: compilations of a frame already compiled (a guard failed)
    recompile_reasons: list[str] = field(default_factory=list)
    graph_breaks: int = 0
    graph_break_reasons: Counter = field(default_factory=Counter)
    compile_time_s: float = 0.0  #: dynamo + backend time of the forward frames
    backward_compile_time_s: float = 0.0  #: backend time of the backward graphs (compiled on first backward)
    wall_time_s: float = 0.0  #: the whole run, for scale
    _marks: dict[str, Any] = field(default_factory=dict, repr=False)

    def start(self) -> CompileStats:
        from torch._dynamo import utils

        self._marks = {
            "metrics": {id(m) for m in utils.get_compilation_metrics()},
            "breaks": Counter(utils.counters["graph_break"]),
            "backward": _backward_seconds(utils),
            "t0": time.perf_counter(),
        }
        return self

    def stop(self) -> CompileStats:
        from torch._dynamo import utils

        marks = self._marks
        new = [m for m in utils.get_compilation_metrics() if id(m) not in marks["metrics"]]
        self.frames = len(new)
        self.recompile_reasons = [str(m.recompile_reason).strip() for m in new if getattr(m, "recompile_reason", None)]
        self.recompilations = len(self.recompile_reasons)
        self.compile_time_s = sum(getattr(m, "entire_frame_compile_time_s", None) or 0.0 for m in new)
        self.backward_compile_time_s = max(0.0, _backward_seconds(utils) - marks["backward"])
        breaks = Counter(utils.counters["graph_break"])
        breaks.subtract(marks["breaks"])
        self.graph_break_reasons = Counter({k: v for k, v in breaks.items() if v > 0})
        self.graph_breaks = sum(self.graph_break_reasons.values())
        self.wall_time_s = time.perf_counter() - marks["t0"]
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "recompilations": self.recompilations,
            "graph_breaks": self.graph_breaks,
            "compile_time_s": round(self.compile_time_s, 3),
            "backward_compile_time_s": round(self.backward_compile_time_s, 3),
            "wall_time_s": round(self.wall_time_s, 3),
        }

    def report(self, title: str = "torch.compile") -> str:
        lines = [
            f"{title}: {self.frames} frame compilation(s), {self.recompilations} recompilation(s), {self.graph_breaks} graph break(s); "
            f"compile time {self.compile_time_s:.2f} s forward + {self.backward_compile_time_s:.2f} s backward "
            f"of {self.wall_time_s:.2f} s"
        ]
        for reason in self.recompile_reasons[:5]:
            lines.append(f"  recompiled: {_one_line(reason)}")
        for reason, count in self.graph_break_reasons.most_common(5):
            lines.append(f"  graph break (x{count}): {_one_line(reason)}")
        return "\n".join(lines)


def _backward_seconds(utils: Any) -> float:
    """Time dynamo's records give the backward compiler (AOT autograd compiles
    the backward graph lazily, on the first backward)."""
    times = getattr(utils, "compilation_time_metrics", {})
    return float(sum(sum(v) for k, v in times.items() if "bw_compiler" in k))


def _one_line(text: str, limit: int = 160) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= limit else first[: limit - 3] + "..."
