"""``WandbLogger``: metrics and hyperparameters to a Weights & Biases run.

``wandb`` (``pip install 'ember[wandb]'``) is imported the first time the
logger writes, not before; the run is started (``wandb.init``) then too.

Where things go: ``{save_dir}/wandb/run-<time>-<id>/`` online,
``{save_dir}/wandb/offline-run-<time>-<id>/`` with ``offline=True`` (or
``WANDB_MODE=offline``); the records are in ``run-<id>.wandb`` inside it.
``wandb sync`` uploads an offline run later.

Resuming: the run id is saved in checkpoints, and a fit resumed from one calls
``wandb.init(id=<that id>, resume="allow")``, so the metrics continue in the
same run. Offline, every ``wandb.init`` writes a new run directory for the
same id; ``wandb sync`` merges them in order.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from ember.callback import Logger
from ember.plugin_manager import hookimpl
from ember.plugins.loggers._common import checkpoint_step, params_dict, require
from ember.plugins.loggers.model_upload import CheckpointUploader, UploadsCheckpoints, checkpoint_score

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

_EXIT_CODES = {"success": 0, "interrupted": 255}


def _config_value(value: Any) -> Any:
    """What ``run.config`` stores: plain values and containers as they are,
    tensors and numpy scalars as numbers, anything else as its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _config_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_config_value(v) for v in value]
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        return _config_value(vars(value))
    if hasattr(value, "tolist"):
        try:
            return value.tolist()
        except Exception:
            pass
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return str(value)


def _version_at_least(version: str, wanted: tuple[int, ...]) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).release >= wanted
    except InvalidVersion:
        return True


class WandbLogger(UploadsCheckpoints, Logger):
    """Log to a W&B run, started lazily.

    :param project: W&B project (W&B's default when ``None``).
    :param name: display name of the run.
    :param save_dir: the directory W&B writes its ``wandb/`` folder into.
    :param id: an existing run's id to continue (with ``resume="allow"``);
        ``None`` lets W&B pick one.
    :param offline: write locally only (``mode="offline"``).
    :param config: hyperparameters to start the run with.
    :param flush_secs: how often ``wandb-core`` writes the run's records to
        its ``.wandb`` file (W&B's ``x_transaction_log_flush_interval``;
        ``None`` keeps W&B's default, 15 s in W&B 0.31). What was not written
        yet is lost if the process is killed outright (SIGKILL).
    :param log_model: upload checkpoints as W&B model artifacts: ``True`` at the
        end of training, ``"all"`` as they are written (see
        :mod:`ember.plugins.loggers.model_upload`). Each is a version of the
        artifact ``checkpoint_name`` (default ``model-{run id}``), aliased
        ``latest`` (and ``best`` for the best model), with the file as
        ``model.ckpt`` and its score in the metadata.
    :param checkpoint_name: the artifact's name.
    :param add_file_policy: W&B's ``add_file`` policy: ``"mutable"`` copies the
        file to W&B's staging area, ``"immutable"`` references it as it is.
    :param init_kwargs: passed to ``wandb.init`` as they are (``entity``,
        ``tags``, ``group``, ``settings``...).

    Lightning's names work too: ``version`` (the run id), ``dir`` (the save
    directory), ``anonymous=True`` (``wandb.init(anonymous="allow")``) and
    ``experiment`` (a run you started, to log into instead of starting one).
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        save_dir: str | os.PathLike[str] = ".",
        id: str | None = None,
        offline: bool = False,
        config: dict[str, Any] | None = None,
        flush_secs: float | None = None,
        prefix: str = "",
        version: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        anonymous: bool | None = None,
        experiment: Any = None,
        log_model: bool | str = False,
        checkpoint_name: str | None = None,
        add_file_policy: str = "mutable",
        **init_kwargs: Any,
    ) -> None:
        # Lightning's names: version is the run id, dir the save directory.
        if version is not None:
            if id is not None and id != version:
                raise ValueError(f"WandbLogger(id={id!r}, version={version!r}): version is Lightning's name for id; pass one.")
            id = version
        if dir is not None:
            save_dir = dir
        if anonymous:
            init_kwargs.setdefault("anonymous", "allow")
        self.prefix = prefix
        require("wandb", "WandbLogger", "wandb")
        self._flush_secs = flush_secs
        self._project = project
        self._run_name = name
        self._save_dir = os.fspath(save_dir)
        self._id = id
        self._offline = offline
        self._config = dict(config or {})
        self._init_kwargs = init_kwargs
        self._run: Run | None = experiment  # an existing run to log into (Lightning's experiment=)
        if experiment is not None:
            self._id = getattr(experiment, "id", id)
        self._resume = id is not None
        self._floor: int | None = None
        self._last_step = -1
        if add_file_policy not in ("mutable", "immutable"):
            raise ValueError(f"WandbLogger(add_file_policy={add_file_policy!r}): use 'mutable' or 'immutable'.")
        self._checkpoint_name, self._add_file_policy = checkpoint_name, add_file_policy
        self._uploader = CheckpointUploader(log_model, self._upload_checkpoint)
        self._warned_step = False

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str | None:
        """The project's name."""
        return self._project

    @property
    def version(self) -> str | None:
        """The run id (known once the run has started, or after a resume)."""
        return self._id

    @property
    def id(self) -> str | None:
        return self._id

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def experiment(self) -> Run:
        """The ``wandb`` run; the first access starts it (``wandb.init``)."""
        if self._run is None:
            self._run = self._init()
        return self._run

    def _init(self) -> Run:
        import wandb

        os.makedirs(self._save_dir, exist_ok=True)
        kwargs: dict[str, Any] = {"dir": self._save_dir, **self._init_kwargs}
        if self._project is not None:
            kwargs.setdefault("project", self._project)
        if self._run_name is not None:
            kwargs.setdefault("name", self._run_name)
        if self._offline:
            kwargs["mode"] = "offline"
        if self._config:
            kwargs.setdefault("config", _config_value(self._config))
        if self._flush_secs is not None:
            settings = kwargs.get("settings") or {}
            if isinstance(settings, dict):
                kwargs["settings"] = {"x_transaction_log_flush_interval": float(self._flush_secs), **settings}
            else:
                settings.x_transaction_log_flush_interval = float(self._flush_secs)
        # Several runs at once (two WandbLoggers, or one beside the user's own
        # run): without this, each wandb.init finishes the run before it.
        kwargs.setdefault("reinit", "create_new" if _version_at_least(wandb.__version__, (0, 19, 10)) else True)
        if self._id is not None:
            kwargs["id"] = self._id
            if self._resume:
                kwargs.setdefault("resume", "allow")
        run = wandb.init(**kwargs)
        self._id = run.id
        self._resume = True  # any later start (after finalize, or from a checkpoint) continues this run
        self._last_step = -1
        return run

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._floor is not None and step <= self._floor:
            return  # written by the run the checkpoint came from
        if step < self._last_step:
            if not self._warned_step:
                self._warned_step = True
                warnings.warn(
                    f"WandbLogger: step {step} is lower than the last one logged ({self._last_step}); W&B drops such rows.",
                    UserWarning,
                    stacklevel=2,
                )
            return
        run = self.experiment
        self._last_step = step
        run.log(metrics, step=step)

    def log_hyperparams(self, params: Any) -> None:
        params = params_dict(params)
        if params:
            self.experiment.config.update(_config_value(params), allow_val_change=True)

    # ------------------------------------------------------------------ checkpoints as artifacts (log_model)
    def _upload_checkpoint(self, path: str, trainer: Any) -> None:
        import wandb

        run = self.experiment
        score, best = checkpoint_score(trainer, path)
        metadata = {"original_filename": os.path.basename(path), "score": score, "step": trainer.global_step}
        artifact = wandb.Artifact(name=self._checkpoint_name or f"model-{run.id}", type="model", metadata=metadata)
        if os.path.isdir(path):
            artifact.add_dir(path, policy=self._add_file_policy)  # type: ignore[arg-type]
        else:
            artifact.add_file(path, name="model.ckpt", policy=self._add_file_policy)  # type: ignore[arg-type]
        run.log_artifact(artifact, aliases=["latest", "best"] if best else ["latest"])

    def on_load_checkpoint(self, trainer: Any, module: Any, checkpoint: dict[str, Any]) -> None:
        # W&B keeps one row per step and drops rows at or below the last
        # step it has: the resumed run starts after the checkpoint's step.
        self._floor = checkpoint_step(checkpoint)

    def finalize(self, status: str) -> None:
        """Finish the run (``run.finish``). Logging again restarts it with the
        same id."""
        self._floor = None
        if self._run is not None:
            run, self._run = self._run, None
            run.finish(exit_code=_EXIT_CODES.get(status, 1))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"id": self._id, "project": self._project}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        run_id = state_dict.get("id")
        if run_id is None:
            return
        if self._run is not None and self._run.id != run_id:
            self.finalize("success")
        self._id = run_id
        self._resume = True

    def __repr__(self) -> str:
        return f"WandbLogger(project={self._project!r}, save_dir={self._save_dir!r}, id={self._id!r})"


@hookimpl
def register_roles(registry: Any) -> None:
    registry.add("logger", "wandb", WandbLogger)
