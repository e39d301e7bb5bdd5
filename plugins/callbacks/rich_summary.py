"""``RichModelSummary``: the model summary printed through rich (``pip install rich``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.plugins.callbacks.model_summary import ModelSummary, summarize

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer


class RichModelSummary(ModelSummary):
    """:class:`ModelSummary` drawn in a rich panel. ``summarize_kwargs`` go to
    ``rich.console.Console`` (e.g. ``width=120``)."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        try:
            import rich  # noqa: F401
        except ImportError as exc:
            raise ModuleNotFoundError("RichModelSummary needs rich: pip install rich (or use ModelSummary).") from exc
        super().__init__(max_depth=max_depth)
        self.console_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if self.max_depth == 0 or not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.panel import Panel
        from rich.text import Text

        Console(**self.console_kwargs).print(Panel(Text(summarize(module, self.max_depth)), title=type(module).__name__))
