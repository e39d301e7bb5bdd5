"""Reading back what each built-in logger's own library stored, and the
:class:`~ember.logger_conformance.LoggerSpec` of every built-in logger.

The readers use the vendor's own reading API where it has one (TensorBoard's
``EventAccumulator``, ``MlflowClient``) and the file format otherwise (CSV; a
W&B offline ``run-<id>.wandb`` transaction log, parsed as wandb-core writes
it). Each returns a :class:`~ember.logger_conformance.Stored`: per metric,
the ``(step, value)`` points in the order the store keeps them, and the run's
status where the store records one. No vendor library is imported before a
reader or a factory is called.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import struct
import tempfile
import time
from typing import Any

from ember.logger_conformance import Handle, KillBound, LoggerSpec, Stored

__all__ = ["BUILTIN_SPECS", "read_csv", "read_mlflow", "read_tensorboard", "read_wandb_offline", "wandb_records"]


def _add(series: dict[str, list[tuple[int, float]]], step: int, metrics: dict[str, Any]) -> None:
    for key, value in metrics.items():
        series.setdefault(key, []).append((int(step), float(value)))


# --------------------------------------------------------------------------- CSV
def read_csv(handle: Handle) -> Stored:
    """``metrics.csv`` in the run directory, read with ``csv.DictReader``: one row per logging call."""
    series: dict[str, list[tuple[int, float]]] = {}
    path = os.path.join(handle.log_dir, "metrics.csv")
    if os.path.exists(path):
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                _add(series, int(row.pop("step")), {k: v for k, v in row.items() if v not in ("", None)})
    return Stored(series)


# --------------------------------------------------------------------------- TensorBoard
def read_tensorboard(handle: Handle) -> Stored:
    """Every event file of the run directory, through TensorBoard's ``EventAccumulator``
    (which also applies a resumed writer's ``purge_step``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(handle.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return Stored({tag: [(e.step, float(e.value)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]})


# --------------------------------------------------------------------------- MLflow
_MLFLOW_STATUS = {"FINISHED": "success", "FAILED": "failed", "KILLED": "interrupted"}


def read_mlflow(handle: Handle) -> Stored:
    """The run's metric histories through ``MlflowClient.get_metric_history``,
    and its status. ``handle.version`` is the run id; the tracking URI is the
    logger's default for ``handle.save_dir`` unless ``handle.extra`` names one."""
    from mlflow import MlflowClient

    if handle.version is None:
        return Stored({})
    uri = handle.extra.get("tracking_uri") or "sqlite:///" + os.path.join(os.path.abspath(handle.save_dir), "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(str(handle.version))
    series = {}
    for key in run.data.metrics:
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        series[key] = [(int(m.step), float(m.value)) for m in points]
    return Stored(series, _MLFLOW_STATUS.get(run.info.status))


# --------------------------------------------------------------------------- W&B offline
def wandb_records(path: str) -> list[Any]:
    """The protobuf records of one ``.wandb`` file: a 7-byte header (``:W&B``,
    magic, version), then 32 KiB blocks of records, each with a 7-byte header
    (checksum, length, type: full / first / middle / last). A record cut short
    at the end (a killed writer) is left out."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    block, pos, payloads, parts = 32768, 7, [], []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        if pos + 7 + length > len(data):
            break
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            payloads.append(payload)
        elif kind == 2:
            parts = [payload]
        elif kind == 3:
            parts.append(payload)
        elif kind == 4:
            payloads.append(b"".join([*parts, payload]))
            parts = []
    records = []
    for raw in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def read_wandb_offline(handle: Handle, wait: float = 8.0) -> Stored:
    """History rows of every ``offline-run-*/run-<id>.wandb`` of the run (a
    resumed offline run is a second directory of the same id), in start
    order; status from the last exit record (0 success, 255 interrupted,
    else failed). ``run.finish()`` can return before wandb-core has written
    the file out, so a finished run is waited for (``wait`` seconds) until
    every segment has its exit record."""
    if handle.version is None:
        return Stored({})
    files = glob.glob(os.path.join(handle.save_dir, "wandb", "offline-run-*", f"run-{handle.version}.wandb"))
    deadline = time.monotonic() + wait
    while True:
        segments = [wandb_records(path) for path in files]
        exits = [[r for r in seg if r.WhichOneof("record_type") == "exit"] for seg in segments]
        if all(exits) or time.monotonic() > deadline or handle.extra.get("running"):
            break
        time.sleep(0.05)

    def start(records: list[Any]) -> int:
        return next((r.run.start_time.ToNanoseconds() for r in records if r.WhichOneof("record_type") == "run"), 0)

    series: dict[str, list[tuple[int, float]]] = {}
    status = None
    for seg in sorted(segments, key=start):
        for record in seg:
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                _add(series, record.history.step.num, {k: v for k, v in items.items() if not k.startswith("_")})
            elif kind == "exit":
                code = record.exit.exit_code
                status = "success" if code == 0 else "interrupted" if code == 255 else "failed"
    return Stored(series, status)


# --------------------------------------------------------------------------- factories
def csv_logger(save_dir: str, **options: Any) -> Any:
    from ember.plugins.loggers import CSVLogger

    return CSVLogger(save_dir=save_dir, **options)


def tensorboard_logger(save_dir: str, **options: Any) -> Any:
    from ember.plugins.loggers.tensorboard import TensorBoardLogger

    return TensorBoardLogger(save_dir=save_dir, **options)


_MLFLOW_TEMPLATE: list[str] = []


def prepare_mlflow() -> None:
    """Create, once per process, an empty migrated MLflow database to copy (migrating one takes seconds)."""
    if not _MLFLOW_TEMPLATE:
        from mlflow import MlflowClient

        path = os.path.join(tempfile.mkdtemp(prefix="ember-mlflow-"), "mlflow.db")
        MlflowClient(tracking_uri="sqlite:///" + path).search_experiments()
        _MLFLOW_TEMPLATE.append(path)


def mlflow_logger(save_dir: str, **options: Any) -> Any:
    """An ``MLflowLogger`` on its default SQLite store in ``save_dir`` (copied
    from a migrated template when one was prepared)."""
    from ember.plugins.loggers.mlflow import MLflowLogger

    db = os.path.join(save_dir, "mlflow.db")
    if _MLFLOW_TEMPLATE and not os.path.exists(db):
        os.makedirs(save_dir, exist_ok=True)
        shutil.copyfile(_MLFLOW_TEMPLATE[0], db)
    return MLflowLogger(save_dir=save_dir, **options)


def wandb_logger(save_dir: str, **options: Any) -> Any:
    from ember.plugins.loggers.wandb import WandbLogger

    return WandbLogger(save_dir=save_dir, offline=True, project="ember-conformance", **options)


def prepare_wandb() -> None:
    """Import wandb and start its ``wandb-core`` service once (seconds, the
    first time in a process), with a throwaway offline run."""
    import wandb

    with tempfile.TemporaryDirectory(prefix="ember-wandb-warmup-") as tmp:
        wandb.init(dir=tmp, mode="offline", project="ember-warmup", reinit="create_new").finish()


def _wandb_env() -> dict[str, str]:
    home = os.path.join(tempfile.gettempdir(), f"ember-wandb-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_ERROR_REPORTING": "false",
    }
    for sub in ("config", "cache", "data", "artifacts"):
        env[f"WANDB_{sub.upper()}_DIR"] = os.path.join(home, sub)
    return env


def _mlflow_bound(options: dict[str, Any]) -> KillBound:
    return KillBound(calls=int(options.get("flush_logs_every_n_steps", 100)) - 1, seconds=float(options.get("flush_secs", 5.0)))


def _csv_bound(options: dict[str, Any]) -> KillBound:
    return KillBound(calls=int(options.get("flush_logs_every_n_steps", 100)) - 1, seconds=options.get("flush_secs", 5.0))


def _tensorboard_bound(options: dict[str, Any]) -> KillBound:
    """Without TensorFlow, TensorBoard's own file layer appends each event to
    the file as the writer thread takes it from the queue: only queued events
    (at most ``max_queue``) can be lost. TensorFlow's file layer buffers until
    the writer flushes (every ``flush_secs``)."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return KillBound(calls=int(options.get("max_queue", 10)), seconds=None)
    return KillBound(calls=None, seconds=float(options.get("flush_secs", 120)))


#: The built-in loggers, as the conformance suite runs them.
BUILTIN_SPECS: dict[str, LoggerSpec] = {
    "csv": LoggerSpec(
        name="csv",
        factory="ember.logger_readback:csv_logger",
        read_back=read_csv,
        flush_options={"flush_logs_every_n_steps": 5, "flush_secs": 0.3},
        kill_bound=_csv_bound,
    ),
    "tensorboard": LoggerSpec(
        name="tensorboard",
        factory="ember.logger_readback:tensorboard_logger",
        read_back=read_tensorboard,
        flush_options={"flush_secs": 0.3, "max_queue": 5},
        kill_bound=_tensorboard_bound,
    ),
    "mlflow": LoggerSpec(
        name="mlflow",
        factory="ember.logger_readback:mlflow_logger",
        read_back=read_mlflow,
        flush_options={"flush_logs_every_n_steps": 3, "flush_secs": 0.3},
        kill_bound=_mlflow_bound,
        records_status=True,
        prepare=prepare_mlflow,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
        handle_extra=lambda logger: {"tracking_uri": logger.tracking_uri},
    ),
    "wandb": LoggerSpec(
        name="wandb",
        factory="ember.logger_readback:wandb_logger",
        read_back=read_wandb_offline,
        flush_options={"flush_secs": 0.3},
        kill_bound=lambda options: KillBound(calls=None, seconds=float(options.get("flush_secs", 15.0))),
        records_status=True,
        env=_wandb_env(),
        prepare=prepare_wandb,
    ),
}
