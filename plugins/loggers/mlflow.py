"""``MLflowLogger``: metrics and parameters to an MLflow run.

``mlflow`` (``pip install 'ember[mlflow]'``: ``mlflow-skinny`` plus SQLAlchemy
and Alembic for the SQLite store) is imported the first time the logger
writes, not before; the run is created then too.

Where things go: ``tracking_uri`` when given (a server, ``sqlite:///...``, a
directory). Otherwise ``sqlite:///{save_dir}/mlflow.db`` with artifacts under
``{save_dir}/mlartifacts``; without SQLAlchemy installed, a file store in
``{save_dir}/mlruns`` (MLflow 3 only opens one when ``MLFLOW_ALLOW_FILE_STORE``
is set, which the logger then sets for its process).

Metrics are buffered and sent with ``MlflowClient.log_batch``: every
``flush_logs_every_n_steps`` logging calls, or when ``flush_secs`` have passed
since the last write, and when the run is saved or ends.

Resuming: the run id is saved in checkpoints, and a fit resumed from one logs
into the same run (status set back to ``RUNNING``).
"""

from __future__ import annotations

import os
import pathlib
import re
import time
import warnings
from typing import TYPE_CHECKING, Any

from ember.callback import Logger
from ember.plugin_manager import hookimpl
from ember.plugins.loggers._common import SameStepFilter, checkpoint_step, flatten, params_dict, require, scalar
from ember.plugins.loggers.model_upload import CheckpointUploader, UploadsCheckpoints

if TYPE_CHECKING:
    from mlflow import MlflowClient

_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . /`` and spaces; anything else becomes ``_``."""
    return _BAD_KEY_CHARS.sub("_", name)


class MLflowLogger(UploadsCheckpoints, Logger):
    """Log to an MLflow run, created lazily.

    :param experiment_name: created when it does not exist.
    :param run_name: the run's display name.
    :param tracking_uri: where the tracking store is; see the module docs for
        the default.
    :param run_id: an existing run to log into.
    :param tags: tags of a new run.
    :param save_dir: directory of the default SQLite database (or file store);
        default ``./mlruns``.
    :param log_model: upload checkpoint files as run artifacts (under
        ``checkpoints/``): ``True`` at the end of training, ``"all"`` as they
        are written; see :mod:`ember.plugins.loggers.model_upload`.
    :param artifact_location: where a new experiment keeps its artifacts (an
        existing experiment keeps its own).
    :param synchronous: ``False`` sends writes in MLflow's background thread
        (awaited when the logger saves and at the end of the run); ``True``
        waits for each; ``None``: MLflow's default (``MLFLOW_ENABLE_ASYNC_LOGGING``).
    :param flush_logs_every_n_steps: logging calls buffered before a write.
    :param flush_secs: buffered metrics are written at the next logging call
        once this many seconds have passed since the last write.
    """

    def __init__(
        self,
        experiment_name: str = "ember",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        save_dir: str | os.PathLike[str] | None = "./mlruns",
        log_model: bool | str = False,
        flush_logs_every_n_steps: int = 100,
        flush_secs: float = 5.0,
        prefix: str = "",
        artifact_location: str | None = None,
        synchronous: bool | None = None,
    ) -> None:
        self.prefix = prefix
        require("mlflow", "MLflowLogger", "mlflow")
        if flush_logs_every_n_steps < 1:
            raise ValueError(f"MLflowLogger(flush_logs_every_n_steps={flush_logs_every_n_steps}) must be at least 1.")
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._save_dir = os.fspath(save_dir) if save_dir is not None else "./mlruns"
        self._artifact_location = artifact_location
        self._write_kwargs: dict[str, Any] = {} if synchronous is None else {"synchronous": bool(synchronous)}
        self._in_flight: list[Any] = []  # RunOperations of asynchronous writes
        self._uploader = CheckpointUploader(log_model, self._upload_checkpoint)
        self._tracking_uri = tracking_uri
        self._own_store = tracking_uri is None
        self._run_id = run_id
        self._tags = dict(tags or {})
        self._flush_every = int(flush_logs_every_n_steps)
        self._flush_secs = float(flush_secs)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._reopen = run_id is not None  # set the run RUNNING again before writing
        self._pending: list[Any] = []  # mlflow.entities.Metric
        self._pending_calls = 0
        self._last_write = time.monotonic()
        self._filter = SameStepFilter()
        self._floor: int | None = None

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self._experiment_name

    @property
    def version(self) -> str | None:
        """The run id (known once the run exists, or after a resume)."""
        return self._run_id

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def tracking_uri(self) -> str:
        if self._tracking_uri is None:
            self._tracking_uri = self._default_uri()
        return self._tracking_uri

    def _default_uri(self) -> str:
        import importlib.util

        root = os.path.abspath(self._save_dir)
        if importlib.util.find_spec("sqlalchemy") is not None:
            return "sqlite:///" + os.path.join(root, "mlflow.db")
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return os.path.join(root, "mlruns")

    @property
    def experiment(self) -> MlflowClient:
        """The ``MlflowClient`` (created on first use)."""
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.tracking_uri
            if uri.startswith("sqlite:///"):
                os.makedirs(os.path.dirname(uri[len("sqlite:///") :]) or ".", exist_ok=True)
            self._client = MlflowClient(tracking_uri=uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            client = self.experiment
            found = client.get_experiment_by_name(self._experiment_name)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                artifacts = self._artifact_location
                if artifacts is None and self._own_store and self.tracking_uri.startswith("sqlite:///"):
                    # beside the database, not in the working directory
                    artifacts = pathlib.Path(self._save_dir, "mlartifacts").resolve().as_uri()
                self._experiment_id = client.create_experiment(self._experiment_name, artifact_location=artifacts)
        return self._experiment_id

    @property
    def run_id(self) -> str:
        """The run's id; the first access creates the run (or reopens a resumed one)."""
        client = self.experiment
        if self._run_id is None:
            tags = {k: str(v) for k, v in self._tags.items()}
            run = client.create_run(self.experiment_id, run_name=self._run_name, tags=tags)
            self._run_id = run.info.run_id
            self._reopen = False
        elif self._reopen:
            self._reopen = False
            client.update_run(self._run_id, status="RUNNING")
        return self._run_id

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._floor is not None and step <= self._floor:
            return  # written by the run the checkpoint came from
        metrics = self._filter(metrics, step)
        if not metrics:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending.extend(Metric(_key(k), float(v), stamp, step) for k, v in metrics.items())
        self._pending_calls += 1
        if self._pending_calls >= self._flush_every or time.monotonic() - self._last_write >= self._flush_secs:
            self.save()

    def log_hyperparams(self, params: Any) -> None:
        """Flattened with ``/``; values as text (MLflow's limit: 6000 characters).
        A parameter the run already has with another value is kept as it was
        (MLflow forbids changing it), with a warning."""
        flat = {_key(k): str(scalar(v))[:_MAX_PARAM_LENGTH] for k, v in flatten(params_dict(params)).items()}
        if not flat:
            return
        from mlflow.entities import Param

        client = self.experiment
        run_id = self.run_id
        existing = client.get_run(run_id).data.params
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
        if changed:
            warnings.warn(
                f"MLflowLogger: run {run_id} already has parameter(s) {', '.join(changed)} with other values; MLflow does not allow "
                "changing them, so they keep their first values.",
                UserWarning,
                stacklevel=2,
            )
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(new), _MAX_PARAMS_PER_BATCH):
            self._track(client.log_batch(run_id, params=new[i : i + _MAX_PARAMS_PER_BATCH], **self._write_kwargs))

    def _track(self, operations: Any) -> None:
        if operations is not None and not self._write_kwargs.get("synchronous", True):
            self._in_flight.append(operations)

    def wait(self) -> None:
        """Wait for the asynchronous writes (``synchronous=False``) sent so far."""
        in_flight, self._in_flight = self._in_flight, []
        for operations in in_flight:
            operations.wait()

    def save(self) -> None:
        """Write the buffered metrics."""
        self._last_write = time.monotonic()
        if not self._pending:
            return
        pending, self._pending, self._pending_calls = self._pending, [], 0
        client = self.experiment
        run_id = self.run_id
        for i in range(0, len(pending), _MAX_METRICS_PER_BATCH):
            self._track(client.log_batch(run_id, metrics=pending[i : i + _MAX_METRICS_PER_BATCH], **self._write_kwargs))

    # ------------------------------------------------------------------ checkpoints as artifacts (log_model)
    def _upload_checkpoint(self, path: str, trainer: Any) -> None:
        if os.path.isdir(path):
            self.experiment.log_artifacts(self.run_id, path, artifact_path=f"checkpoints/{os.path.basename(path)}")
        else:
            self.experiment.log_artifact(self.run_id, path, artifact_path="checkpoints")

    def on_load_checkpoint(self, trainer: Any, module: Any, checkpoint: dict[str, Any]) -> None:
        # The run already holds the steps up to the checkpoint's (and a
        # checkpoint taken at validation end makes the resumed fit repeat that
        # step's epoch aggregates): start after it.
        self._floor = checkpoint_step(checkpoint)

    def finalize(self, status: str) -> None:
        """Write what is buffered and mark the run ``FINISHED`` (``FAILED``,
        ``KILLED``). Logging again sets it back to ``RUNNING``."""
        self._floor = None
        if self._pending:
            self.save()  # creates the client and the run when nothing has been written yet
        self.wait()
        if self._client is None or self._run_id is None:
            return  # nothing was ever logged: no run to close
        self._client.set_terminated(self._run_id, status=_STATUS.get(status, "FAILED"))
        self._reopen = True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        # A checkpoint must name the run even when nothing has been written to
        # it yet (metrics still buffered), so that a resume continues that run.
        return {"run_id": self.run_id, "experiment_name": self._experiment_name}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        run_id = state_dict.get("run_id")
        if run_id is None:
            return
        self._run_id = run_id
        self._reopen = True

    def __repr__(self) -> str:
        return f"MLflowLogger(experiment_name={self._experiment_name!r}, tracking_uri={self._tracking_uri!r}, run_id={self._run_id!r})"


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("logger", "mlflow", MLflowLogger)
