"""``Compile``: run the module's forward through ``torch.compile`` for a run,
and say at its end what compiling cost.

Opt-in: ``Trainer(callbacks=[Compile()])``, or in a stack::

    [[callbacks]]
    name = "compile"
    init_args = { mode = "max-autotune-no-cudagraphs" }

At ``setup`` the module is compiled in place (``module.compile(...)``, so
its parameter names, its checkpoints and every hook are those of the plain
module); at ``teardown`` the plain call is put back and, unless
``verbose=False``, one report is printed on global rank zero: frames
compiled, recompilations (with dynamo's reasons), graph breaks (with
theirs), and the compile time of the forward and backward graphs against
the run's wall time. The figures stay in :attr:`Compile.stats`.

A module that is already compiled (``trainer.fit(torch.compile(module))``,
or ``module.compile()`` before ``fit``) is left as it is and only reported on.
Compiling costs nothing per step on ember's side: the compiled call is
what ``module(x)`` runs. See docs/compile.md for when compiling pays.

Two opt-ins compile more of the step, from ``on_fit_start`` (the optimizers
exist and any checkpoint is restored) to ``teardown``:
``optimizer_step=True`` compiles each optimizer's parameter update (the
closure with forward, backward and clipping stays eager; LBFGS stays eager),
``training_step=True`` compiles ``training_step`` as a whole (forward and
loss in one graph), under every strategy (DDP's and DeepSpeed's wrappers call
the module's compiled ``training_step``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.compile import (
    CompileStats,
    compile_optimizer_step,
    compile_training_step,
    restore_optimizer_step,
    restore_training_step,
)
from ember.plugin_manager import hookimpl

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


class Compile(Callback):
    """Compile the module's forward with ``torch.compile`` while the trainer runs.

    :param mode: ``torch.compile``'s mode (``"default"``, ``"reduce-overhead"``
        for CUDA graphs, ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``).
    :param backend: the compiler backend (``"inductor"``; ``"aot_eager"`` and
        ``"eager"`` compile nothing and are for checking graph capture).
    :param fullgraph: fail on a graph break instead of splitting the graph.
    :param dynamic: ``True``/``False`` force/forbid dynamic shapes; ``None``
        lets dynamo decide after a shape changes.
    :param options: backend options (not together with ``mode``).
    :param verbose: print the report at the end of the run.
    :param optimizer_step: also compile the optimizers' parameter updates
        (``fit`` only; same backend and options, ``fullgraph=False``).
    :param training_step: also compile ``training_step`` as a whole (``fit``
        only).
    """

    def __init__(
        self,
        mode: str | None = None,
        backend: str = "inductor",
        fullgraph: bool = False,
        dynamic: bool | None = None,
        options: dict[str, Any] | None = None,
        verbose: bool = True,
        optimizer_step: bool = False,
        training_step: bool = False,
    ) -> None:
        if mode is not None and options is not None:
            raise ValueError("Compile(mode=..., options=...): torch.compile takes one or the other; put the mode's settings in options.")
        self.kwargs: dict[str, Any] = {"backend": backend, "fullgraph": fullgraph, "dynamic": dynamic}
        if mode is not None:
            self.kwargs["mode"] = mode
        if options is not None:
            self.kwargs["options"] = options
        self.verbose = verbose
        self.optimizer_step = optimizer_step
        self.training_step = training_step
        self.stats: CompileStats | None = None
        self._installed = False
        self._steps: list[Any] = []  # optimizers whose step this callback compiled
        self._step_module: Any = None  # the module whose training_step it compiled

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._installed = getattr(module, "_compiled_call_impl", None) is None
        if self._installed:
            module.compile(**self.kwargs)
        self.stats = CompileStats().start()

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if self.optimizer_step:
            kwargs = {**self.kwargs, "fullgraph": False}
            self._steps = [opt for opt in trainer.optimizers if compile_optimizer_step(opt, **kwargs)]
        if self.training_step:
            # Every strategy calls the module's own training_step attribute (DDP's and
            # DeepSpeed's wrappers too), so the compiled one installed there runs.
            compile_training_step(module, **self.kwargs)
            self._step_module = module

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        if self._installed:
            module._compiled_call_impl = None
            self._installed = False
        for opt in self._steps:
            restore_optimizer_step(opt)
        self._steps = []
        if self._step_module is not None:
            restore_training_step(self._step_module)
            self._step_module = None
        if self.stats is None:
            return
        self.stats.stop()
        if self.verbose and trainer.is_global_zero:
            print(self.stats.report(f"Compile ({stage})"), flush=True)

    def __repr__(self) -> str:
        extra = {"optimizer_step": self.optimizer_step, "training_step": self.training_step}
        args = ", ".join(f"{k}={v!r}" for k, v in {**self.kwargs, **extra}.items() if k in self.kwargs or v)
        return f"Compile({args})"


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "compile", Compile)
