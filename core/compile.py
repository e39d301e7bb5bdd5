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

import sys
import time
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
    return inner


def strip_compiled_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the ``_orig_mod.`` prefix of a compiled module's
    keys removed (for weights saved from ``torch.compile(m).state_dict()``)."""
    n = len(COMPILED_PREFIX)
    return {k[n:] if k.startswith(COMPILED_PREFIX) else k: v for k, v in state_dict.items()}


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
