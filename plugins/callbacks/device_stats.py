"""``DeviceStatsMonitor``: process memory and CPU use, and CUDA memory, while training.

Every ``trainer.log_every_n_steps`` optimizer steps (the same cadence as the
loss) it sends, through ``trainer.log_metrics``:

with ``cpu_stats=True``
    ``device_stats/cpu_rss_mb`` (resident memory now, from ``/proc/self/statm``
    where it exists, else psutil when installed), ``device_stats/cpu_max_rss_mb``
    (peak, from ``resource.getrusage``) and ``device_stats/cpu_percent`` (CPU
    time of this process over elapsed time since the last report; 100 = one
    core busy);
when the trainer's device is a CUDA device
    ``device_stats/cuda_allocated_mb``, ``device_stats/cuda_reserved_mb`` and
    ``device_stats/cuda_max_allocated_mb`` (``torch.cuda.memory_allocated``,
    ``memory_reserved``, ``max_memory_allocated``: host-side counters, no sync).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from ember.callback import Callback
from ember.plugin_manager import hookimpl

if TYPE_CHECKING:
    from ember.module import Module
    from ember.trainer import Trainer

_MB = 1024.0 * 1024.0


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4096


def rss_bytes() -> int | None:
    """Resident set size of this process, or ``None`` when it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _page_size()
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


def max_rss_bytes() -> int | None:
    """Peak resident set size of this process (``getrusage``)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


class DeviceStatsMonitor(Callback):
    """Log memory (and CPU) statistics of this process and its CUDA device.

    :param cpu_stats: log the process's RSS, peak RSS and CPU use; ``None``
        (the default): only when training on the CPU.
    """

    def __init__(self, cpu_stats: bool | None = None) -> None:
        self.cpu_stats = cpu_stats
        self._log_cpu = cpu_stats is not False  # None: decided when training starts
        #: Every value logged, as (step, {name: value}) pairs.
        self.history: list[tuple[int, dict[str, float]]] = []
        self._cuda_device: Any = None
        self._last_logged_step = -1
        self._last_times: tuple[float, float] | None = None

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        self._last_logged_step = -1
        self._last_times = (time.perf_counter(), time.process_time())
        device = trainer.strategy.root_device
        self._cuda_device = device if device.type == "cuda" else None
        self._log_cpu = self._cuda_device is None if self.cpu_stats is None else bool(self.cpu_stats)
        if self.cpu_stats is False and self._cuda_device is None:
            warnings.warn("DeviceStatsMonitor(cpu_stats=False) on a non-CUDA device has nothing to log.", stacklevel=2)
        if not trainer.loggers:
            warnings.warn("DeviceStatsMonitor: the Trainer has no logger, so the statistics are kept in .history only.", stacklevel=2)

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step != self._last_logged_step and step % trainer.log_every_n_steps == 0:
            self._last_logged_step = step
            metrics = self.stats()
            if metrics:
                self.history.append((step, metrics))
                trainer.log_metrics(metrics, step=step)

    def stats(self) -> dict[str, float]:
        """The statistics now."""
        out: dict[str, float] = {}
        if self._log_cpu:
            rss = rss_bytes()
            if rss is not None:
                out["device_stats/cpu_rss_mb"] = rss / _MB
            peak = max_rss_bytes()
            if peak is not None:
                out["device_stats/cpu_max_rss_mb"] = peak / _MB
            now = (time.perf_counter(), time.process_time())
            if self._last_times is not None and now[0] > self._last_times[0]:
                out["device_stats/cpu_percent"] = 100.0 * (now[1] - self._last_times[1]) / (now[0] - self._last_times[0])
            self._last_times = now
        if self._cuda_device is not None:
            import torch

            dev = self._cuda_device
            out["device_stats/cuda_allocated_mb"] = torch.cuda.memory_allocated(dev) / _MB
            out["device_stats/cuda_reserved_mb"] = torch.cuda.memory_reserved(dev) / _MB
            out["device_stats/cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / _MB
        return out


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("callback", "device_stats_monitor", DeviceStatsMonitor)
