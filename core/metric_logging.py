"""``self.log`` with torchmetrics objects (``Metric``, ``MetricCollection``).

Kept apart from :mod:`ember.results` so that logging plain tensors pays
nothing for it: :class:`~ember.results.Results` reaches this module only for
values that are neither tensors nor numbers. torchmetrics is never imported
here; a metric object being logged means it is already loaded.

Semantics (Lightning's):

- step value: what the metric's last ``forward`` returned (``metric(preds,
  target)`` updates the state and returns the batch's value);
- epoch value: ``metric.compute()`` when the epoch's values are reduced
  (torchmetrics synchronises processes itself, so ``sync_dist`` is not
  applied on top), then ``metric.reset()``;
- resume: the metric's accumulated state is saved with the loop's results
  and put back into the same module attribute when training resumes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ember.results import Results, _Entry


def is_metric(value: Any) -> bool:
    torchmetrics = sys.modules.get("torchmetrics")
    return torchmetrics is not None and isinstance(value, torchmetrics.Metric)


def collection_items(value: Any) -> Any:
    """``(name, metric)`` pairs when ``value`` is a ``MetricCollection``, else ``None``."""
    torchmetrics = sys.modules.get("torchmetrics")
    if torchmetrics is None or not isinstance(value, torchmetrics.MetricCollection):
        return None
    return value.items(keep_base=False, copy_state=False)


def log_object(results: Results, key: str, entry: _Entry, value: Any) -> bool:
    """Record a metric object under ``entry``; ``False`` when ``value`` is not one."""
    if not is_metric(value):
        return False
    entry.metric = value
    cache = value._forward_cache
    if isinstance(cache, torch.Tensor):
        entry.last = cache.detach()
        entry.fresh = True
    return True


def epoch_value(entry: _Entry) -> torch.Tensor | None:
    value = entry.metric.compute()
    return value.detach() if isinstance(value, torch.Tensor) else None


def reset_all(results: Results) -> None:
    for entry in results.entries.values():
        if entry.metric is not None:
            entry.metric.reset()


def _attribute_of(module: torch.nn.Module | None, metric: Any) -> str | None:
    if module is None:
        return None
    for name, child in module.named_modules():
        if child is metric:
            return name
    return None


def save_state(entry: _Entry, module: torch.nn.Module | None) -> dict[str, Any] | None:
    """The metric's accumulated state and where it lives in ``module``."""
    metric = entry.metric
    attribute = _attribute_of(module, metric)
    if attribute is None:
        return None  # not an attribute of the module: it cannot be found again after a restart
    return {
        "attribute": attribute,
        "update_count": int(metric._update_count),
        "state": {name: getattr(metric, name) for name in metric._defaults},
    }


def restore_state(entry: _Entry, saved: dict[str, Any], module: torch.nn.Module | None) -> None:
    if module is None:
        return
    metric = module.get_submodule(saved["attribute"])
    for name, value in saved["state"].items():
        setattr(metric, name, value)
    metric._update_count = saved["update_count"]
    metric._computed = None
    entry.metric = metric
