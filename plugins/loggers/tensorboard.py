"""``TensorBoardLogger``: scalars and hyperparameters as TensorBoard event files.

Layout::

    {save_dir}/{name}/version_{N}/events.out.tfevents.*   scalars, hparams
    {save_dir}/{name}/version_{N}/hparams.json            hyperparameters, readable without TensorBoard

Writing goes through ``torch.utils.tensorboard.SummaryWriter`` (it needs the
``tensorboard`` package: ``pip install 'ember[tensorboard]'``). Neither is
imported before the logger first writes.

Hyperparameters are written for TensorBoard's HParams dashboard (its plugin
data, in the run's own event file rather than in the extra sub-directory
``SummaryWriter.add_hparams`` would create), flattened with ``/`` and with
values TensorBoard cannot show turned into text. With
``default_hp_metric=True`` (the default, as in Lightning) ``hp_metric = -1`` is
logged with them so the dashboard has a metric column to start with.
``sub_dir`` puts a run's files one directory deeper:
``{save_dir}/{name}/version_{N}/{sub_dir}``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ember.hparams import json_default
from ember.plugin_manager import hookimpl
from ember.plugins.loggers._common import SameStepFilter, VersionedLogger, checkpoint_step, flatten, params_dict, require, scalar

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

HPARAMS_FILE = "hparams.json"


class TensorBoardLogger(VersionedLogger):
    """Log to ``{save_dir}/{name}/version_{N}`` in TensorBoard's format.

    :param save_dir: parent directory of all experiments.
    :param name: experiment name (a sub-directory of ``save_dir``).
    :param version: an ``int`` gives ``version_{version}``, a ``str`` is used
        as the directory name as it is; ``None`` picks the next free
        ``version_N``.
    :param default_hp_metric: log ``hp_metric = -1`` with the hyperparameters.
    :param sub_dir: a sub-directory of the version directory for this run's
        files (``log_dir`` includes it).
    :param flush_secs: how often the writer's background thread flushes
        events to disk (it also flushes every ``max_queue`` events, on
        :meth:`save` and when the run ends).
    :param max_queue: events kept in memory before a flush.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] = ".",
        name: str = "ember_logs",
        version: int | str | None = None,
        default_hp_metric: bool = True,
        flush_secs: float = 120,
        max_queue: int = 10,
        prefix: str = "",
        log_graph: bool = False,
        sub_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.prefix = prefix
        self._log_graph = log_graph
        require("tensorboard", "TensorBoardLogger", "tensorboard")
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._configured_version = version
        self._default_hp_metric = default_hp_metric
        self._sub_dir = os.fspath(sub_dir) if sub_dir is not None else None
        self._flush_secs = flush_secs
        self._max_queue = max_queue
        self._writer: SummaryWriter | None = None
        self._resumed = False
        self._purge_step: int | None = None
        self._floor: int | None = None  # during a resumed fit: steps up to the checkpoint's are already written
        self._hparams: dict[str, Any] = {}
        self._filter = SameStepFilter()

    @property
    def log_dir(self) -> str:
        """``{root_dir}/version_{N}``, and ``/{sub_dir}`` when given: where this run's files go."""
        base = super().log_dir
        return os.path.join(base, self._sub_dir) if self._sub_dir else base

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    def experiment(self) -> SummaryWriter:
        """The ``SummaryWriter`` (created on first use)."""
        return self._open(None)

    def _open(self, first_step: int | None) -> SummaryWriter:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # A resumed run hides whatever the interrupted run wrote from its
            # first step on (TensorBoard's purge_step), so the steps logged
            # between the checkpoint and the interruption are not shown twice.
            purge = None
            if self._resumed:
                purge = self._purge_step if self._purge_step is not None else first_step
            self._resumed, self._purge_step = False, None
            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = SummaryWriter(log_dir=self.log_dir, max_queue=self._max_queue, flush_secs=self._flush_secs, purge_step=purge)
        return self._writer

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._floor is not None and step <= self._floor:
            return
        metrics = self._filter(metrics, step)
        if not metrics:
            return
        writer = self._writer if self._writer is not None else self._open(step)
        for key, value in metrics.items():
            if isinstance(value, dict):  # several curves on one chart
                writer.add_scalars(key, value, step)
            else:
                writer.add_scalar(key, value, step)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Add ``model``'s graph, traced with ``input_array`` (default: its
        ``example_input_array``), to TensorBoard."""
        import torch

        example = input_array if input_array is not None else getattr(model, "example_input_array", None)
        if example is None:
            import warnings

            warnings.warn("TensorBoardLogger(log_graph=True) needs the module's example_input_array (or log_graph(model, input_array)).", stacklevel=2)
            return
        device = getattr(model, "device", None)
        if device is not None and isinstance(example, torch.Tensor):
            example = example.to(device)
        with torch.no_grad():
            self.experiment.add_graph(model, example)

    def on_train_start(self, trainer: Any, module: Any) -> None:
        if self._log_graph and trainer.is_global_zero:
            self.log_graph(module)

    def log_hyperparams(self, params: Any, metrics: dict[str, float] | None = None) -> None:
        """Write ``params`` for the HParams dashboard and to ``hparams.json``.
        ``metrics`` (optional) are logged as scalars at step 0 and named as the
        dashboard's metric columns."""
        params = params_dict(params)
        if not params and not metrics:
            return
        self._hparams.update(params)
        self._write_json()
        from torch.utils.tensorboard.summary import hparams

        if metrics is None and self._default_hp_metric:
            metrics = {"hp_metric": -1.0}
        flat = {k: scalar(v) for k, v in flatten(self._hparams).items()}
        writer = self.experiment
        exp, ssi, sei = hparams(flat, dict(metrics or {}))
        file_writer = writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        if metrics:
            self.log_metrics(dict(metrics), 0)

    def on_load_checkpoint(self, trainer: Any, module: Any, checkpoint: dict[str, Any]) -> None:
        # A resumed fit. Whatever the interrupted run wrote after the
        # checkpoint's step is hidden (TensorBoard's purge_step), because the
        # resumed run writes those steps again. What it wrote at the
        # checkpoint's step stays, and the resumed run's repeats of that step
        # (a checkpoint taken at validation end re-runs the epoch's end) are
        # dropped, as W&B does: each step is shown once.
        step = checkpoint_step(checkpoint)
        if step is None:
            return
        self._floor = step
        if self._writer is None:
            self._resumed = True
            self._purge_step = step + 1

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    def _write_json(self) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        path = os.path.join(self.log_dir, HPARAMS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self._hparams, fh, indent=2, sort_keys=True, default=json_default)
            fh.write("\n")
        os.replace(tmp, path)

    def save(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str) -> None:
        """Flush and close the writer; logging again reopens the same directory."""
        self._floor = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"version": self.version}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version") is None:
            return
        writer_dir = self.log_dir if self._writer is not None else None
        if self._adopt_saved_version(state_dict.get("version")) and writer_dir is not None:
            self.finalize("success")  # the writer was open in another directory
        self._resumed = True

    def __repr__(self) -> str:
        return f"TensorBoardLogger(save_dir={self._save_dir!r}, name={self._name!r}, version={self._version!r})"


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("logger", "tensorboard", TensorBoardLogger)
