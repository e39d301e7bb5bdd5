"""``deepspeed``: ZeRO data parallelism through Microsoft DeepSpeed.

Registered names: ``deepspeed`` (stage 2 unless told otherwise),
``deepspeed_stage_1``, ``deepspeed_stage_2``, ``deepspeed_stage_3`` and
``deepspeed_stage_2_offload`` (stage 2 with the optimizer state and step on
the CPU, DeepSpeed's ``DeepSpeedCPUAdam``).

DeepSpeed is an optional dependency (``pip install 'ember[deepspeed]'``) and is
imported only when this strategy sets up, never when ember starts.

How the pieces fit:

- Processes are started like ``ddp``: by ``torchrun``/``srun`` or, without a
  launcher, by ember's spawn launcher. The process group is ``gloo`` on CPU and
  ``nccl`` on CUDA; ``deepspeed.init_distributed`` then adopts it.
- ``setup_module`` remembers the module; the engine is made in
  ``setup_module_and_optimizers`` (the kernel configures the optimizers after
  placing the module) with ``deepspeed.initialize(model=<wrapper whose forward
  is training_step>, optimizer=<the optimizer from configure_optimizers>)``,
  and returned to the trainer, which trains through it.
- The engine does the backward (``engine.backward``) and the step
  (``engine.step``: ZeRO partitioning, loss scaling, clipping).
- Gradient accumulation: ember's loop owns the window. The engine is
  configured with ``gradient_accumulation_steps = accumulate_grad_batches`` (so
  DeepSpeed's batch-size arithmetic is right) but the boundary is set
  explicitly on every micro-batch (``set_gradient_accumulation_boundary``), the
  loss ember already divided is not divided again (``scale_wrt_gas=False``),
  and ember's ``zero_grad`` is a no-op (the engine clears gradients after each
  step).
- Checkpoints are DeepSpeed's own directory format: ``save_checkpoint(ckpt,
  path)`` calls ``engine.save_checkpoint(path, tag="ember",
  client_state={"ember": <ckpt without weights and optimizer state>})`` on
  every rank. ``load_checkpoint(path)`` reads the client state back (the engine
  does not exist yet at that point of the kernel's set-up), and the engine
  restores weights and (partitioned) optimizer state right after
  ``deepspeed.initialize``; the dict handed to the kernel then carries the
  module's restored weights and a marker optimizer state, so the kernel's plain
  ``load_state_dict`` calls change nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch

from ember.plugin_manager import hookimpl
from ember.plugins.strategies.ddp import DDPStrategy, TrainingStepModule, unwrap_module
from ember.plugins.strategies.deepspeed_checkpoint import TAG, load_full_weights, read_directory, tag_of
from ember.plugins.strategies.deepspeed_config import apply_runtime_options, collect_options, engine_config
from ember.plugins.strategies.deepspeed_wrappers import OPTIMIZER_MARKER, DeepSpeedOptimizer, DeepSpeedPrecision


def _import_deepspeed() -> Any:
    try:
        import deepspeed
    except ImportError as exc:
        raise ImportError(
            "strategy='deepspeed' needs the DeepSpeed package: pip install 'ember[deepspeed]' (or pip install deepspeed)."
        ) from exc
    return deepspeed


class DeepSpeedStrategy(DDPStrategy):
    """ZeRO stage 1, 2 or 3 through a DeepSpeed engine.

    ``stage``: ZeRO stage (1, 2 or 3). ``offload_optimizer``: keep optimizer
    state on the CPU and step there (with your torch optimizer, or with
    DeepSpeed's ``DeepSpeedCPUAdam``, which is JIT-built on first use).
    ``offload_parameters``: with stage 3, parameters on the CPU too.
    ``config``: a DeepSpeed config (dict, or path to a JSON file) used as it is
    (ember fills only ``train_micro_batch_size_per_gpu``,
    ``gradient_accumulation_steps`` and ``train_batch_size`` when absent).
    Without it ember builds one from the trainer (batch size of the training
    dataloader, ``accumulate_grad_batches``, ``gradient_clip_val``, precision).
    ``cpu_torch_adam`` (default ``True``): on CPU, add ``"torch_adam": true`` and
    ``"zero_force_ds_cpu_optimizer": false``, so the optimizer from
    ``configure_optimizers`` is used as it is and no Adam op is JIT-built.
    ``logging_batch_size_per_gpu``: used when the dataloader has no batch size.
    Other keywords go to ``DDPStrategy`` (``process_group_backend``, ``timeout``).
    """

    name = "deepspeed"
    no_backward_sync = None  # the engine decides when gradients are reduced

    def __init__(
        self,
        accelerator: Any = None,
        precision: Any = None,
        checkpoint_io: Any = None,
        environment: Any = None,
        devices: list[torch.device] | int | None = None,
        num_nodes: int = 1,
        *,
        zero_optimization: bool = True,
        stage: int = 2,
        remote_device: str | None = None,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        offload_params_device: str = "cpu",
        nvme_path: str = "/local_nvme",
        params_buffer_count: int = 5,
        params_buffer_size: int = 100_000_000,
        max_in_cpu: int = 1_000_000_000,
        offload_optimizer_device: str = "cpu",
        optimizer_buffer_count: int = 4,
        block_size: int = 1_048_576,
        queue_depth: int = 8,
        single_submit: bool = False,
        overlap_events: bool = True,
        thread_count: int = 1,
        pin_memory: bool = False,
        sub_group_size: int = 1_000_000_000_000,
        contiguous_gradients: bool = True,
        overlap_comm: bool = True,
        allgather_partitions: bool = True,
        reduce_scatter: bool = True,
        allgather_bucket_size: int = 200_000_000,
        reduce_bucket_size: int = 200_000_000,
        zero_allow_untested_optimizer: bool = True,
        logging_batch_size_per_gpu: int | str | None = "auto",
        config: dict[str, Any] | str | os.PathLike[str] | None = None,
        logging_level: int = 30,
        loss_scale: float = 0,
        initial_scale_power: int = 16,
        loss_scale_window: int = 1000,
        hysteresis: int = 2,
        min_loss_scale: int = 1,
        partition_activations: bool = False,
        cpu_checkpointing: bool = False,
        contiguous_memory_optimization: bool = False,
        synchronize_checkpoint_boundary: bool = False,
        load_full_weights: bool = False,
        exclude_frozen_parameters: bool = False,
        cpu_torch_adam: bool = True,
        process_group_backend: str | None = None,
        timeout: Any = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: Any = None,
        precision_plugin: Any = None,
    ) -> None:
        super().__init__(  # the precision goes through the setter below
            accelerator,
            precision,
            checkpoint_io,
            environment,
            devices,
            num_nodes,
            process_group_backend=process_group_backend,
            timeout=timeout,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            precision_plugin=precision_plugin,
        )
        if stage not in (1, 2, 3):
            raise ValueError(f"DeepSpeedStrategy(stage={stage!r}): ZeRO stage must be 1, 2 or 3.")
        if offload_parameters and stage != 3:
            raise ValueError("offload_parameters=True needs ZeRO stage 3.")
        if isinstance(config, (str, os.PathLike)):
            with open(config) as f:
                config = json.load(f)
        self.stage = stage
        self.offload_optimizer = offload_optimizer
        self.offload_parameters = offload_parameters
        self.user_config = dict(config) if config is not None else None
        self.cpu_torch_adam = cpu_torch_adam
        self.logging_batch_size_per_gpu = None if logging_batch_size_per_gpu == "auto" else logging_batch_size_per_gpu
        #: Lightning's flat config keywords; see :mod:`ember.plugins.strategies.deepspeed_config`.
        self.options = collect_options(locals())
        self.load_full_weights = load_full_weights
        self.exclude_frozen_parameters = exclude_frozen_parameters
        self.config: dict[str, Any] | None = None  # the config the engine was made with
        self.engine: Any = None
        self._module: Any = None
        self._in_step = False
        self._pending_load: tuple[str | None, dict[str, Any]] | None = None
        self._final_state: dict[str, Any] | None = None

    # precision: wrap whatever the trainer resolved
    @property
    def precision(self) -> Any:
        return self._precision

    @precision.setter
    def precision(self, value: Any) -> None:
        if value is not None and not isinstance(value, DeepSpeedPrecision):
            value = DeepSpeedPrecision(value)
        self._precision = value

    @property
    def zero_stage(self) -> int:
        if self.config is not None:
            return int(self.config.get("zero_optimization", {}).get("stage", 0))
        if self.user_config is not None:
            return int(self.user_config.get("zero_optimization", {}).get("stage", 0))
        return self.stage

    # ----------------------------------------------------------------- set-up
    def setup_environment(self) -> None:
        super().setup_environment()
        global_rank, local_rank, _, world_size = self._ranks  # type: ignore[misc]
        # DeepSpeed reads these (and tries MPI discovery without them).
        os.environ.setdefault("RANK", str(global_rank))
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
        os.environ.setdefault("WORLD_SIZE", str(world_size))
        deepspeed = _import_deepspeed()
        backend = self.process_group_backend or ("nccl" if self._device.type == "cuda" else "gloo")
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        deepspeed.utils.logging.logger.setLevel(self.options["logging_level"])

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if not module.automatic_optimization:
            raise NotImplementedError("strategy='deepspeed' supports automatic optimization only (the engine runs backward and step).")
        self._module = module
        self._final_state = None
        self.engine = None
        return module.to(self._device) if self._device.type != "cpu" else module

    def setup_module_and_optimizers(
        self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]
    ) -> tuple[torch.nn.Module, list[Any]]:
        """Make the engine from the module and its one optimizer, and return
        both: the loop calls ``engine(batch, batch_idx)`` (its forward runs
        ``training_step``) and steps a :class:`DeepSpeedOptimizer`."""
        if len(optimizers) != 1:
            raise ValueError(f"strategy='deepspeed' trains with exactly one optimizer; configure_optimizers returned {len(optimizers)}.")
        deepspeed = _import_deepspeed()
        self.config = self._build_config(module.trainer)
        apply_runtime_options(deepspeed, self.options, self.config)
        optimizer = optimizers[0]
        if self._pending_load is not None and self._pending_load[0] is None:  # load_full_weights
            module.load_state_dict(self._pending_load[1]["state_dict"])
        self.engine, _, _, _ = deepspeed.initialize(
            model=TrainingStepModule(module), optimizer=optimizer, config=self.config, dist_init_required=False
        )
        if self._pending_load is not None:
            path, returned = self._pending_load
            self._pending_load = None
            if path is not None:
                self.engine.load_checkpoint(path, tag=tag_of(path))
            # The kernel will now load these into the module: its own restored values.
            returned["state_dict"].clear()
            returned["state_dict"].update(module.state_dict())
        return self.engine, [DeepSpeedOptimizer(self, optimizer)]

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[Any]:
        """For callers of the plain protocol: the engine is made with the
        module that ``setup_module`` placed (see :meth:`setup_module_and_optimizers`)."""
        return self.setup_module_and_optimizers(self._module, optimizers)[1]

    def _build_config(self, trainer: Any) -> dict[str, Any]:
        return engine_config(self, trainer)

    # ----------------------------------------------------------------- the step
    def backward(self, loss: torch.Tensor, module: Any) -> None:
        engine = self.engine
        if engine is None:
            raise RuntimeError("strategy='deepspeed': backward before the engine was set up.")
        engine.set_gradient_accumulation_boundary(self._in_step)
        engine.backward(loss, scale_wrt_gas=False)
        if not self._in_step:
            engine.step()  # not a boundary: DeepSpeed only counts the micro-step

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any] | None = None) -> Any:
        engine = self.engine
        self._in_step = True
        try:
            output = closure() if closure is not None else None
        finally:
            self._in_step = False
        engine.set_gradient_accumulation_boundary(True)
        engine.step()
        return output

    # ----------------------------------------------------------------- weights
    def module_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        """Full weights. With ZeRO-3 this gathers them: every rank must call it."""
        engine = self.engine
        if engine is None or self.zero_stage != 3:
            return unwrap_module(module).state_dict()
        if self._final_state is not None:
            return self._final_state
        self._group_ready("gathering the ZeRO-3 weights")  # raises once this rank failed
        from deepspeed import zero

        user = unwrap_module(module)
        params = list(user.parameters())
        with zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().clone() for k, v in user.state_dict().items()}

    def gather_final_state(self, module: torch.nn.Module | None) -> None:
        """ZeRO-3: gather the full weights on every rank at the end of a spawned
        stage, so that rank zero ships them back without a collective of its own."""
        if self.engine is not None and self.zero_stage == 3 and module is not None:
            self._final_state = self.module_state_dict(module)

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        if self.engine is None:
            raise RuntimeError(
                "strategy='deepspeed' writes checkpoints through the engine, which exists only while fitting "
                "(save during or after trainer.fit in the same process)."
            )
        self._group_ready("a checkpoint save")  # raises once this rank failed: the save is collective
        client = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
        self.engine.save_checkpoint(path, tag=TAG, client_state={"ember": client}, exclude_frozen_parameters=self.exclude_frozen_parameters)

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        if self.load_full_weights and os.path.isfile(path):
            returned = load_full_weights(path, OPTIMIZER_MARKER)
            self._pending_load = (None, returned)  # into the module before the engine partitions it
            return returned
        if not os.path.isdir(path):
            raise ValueError(
                f"strategy='deepspeed' resumes from DeepSpeed checkpoint directories; {path!r} is not a directory. "
                "(A single-file ember checkpoint can be loaded with Module.load_from_checkpoint.)"
            )
        returned = read_directory(path, self.zero_stage, OPTIMIZER_MARKER)
        self._pending_load = (path, returned)
        return returned

    def remove_checkpoint(self, path: str) -> None:
        if self.is_global_zero:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)

    def teardown(self) -> None:
        self.engine = None
        super().teardown()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["engine"] = None
        return state


def _preset(stage: int, offload: bool = False) -> type[DeepSpeedStrategy]:
    """A module-level subclass per shorthand (the spawn launcher pickles the registry)."""

    def __init__(self: DeepSpeedStrategy, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stage", stage)
        kwargs.setdefault("offload_optimizer", offload)
        DeepSpeedStrategy.__init__(self, *args, **kwargs)

    name = f"deepspeed_stage_{stage}{'_offload' if offload else ''}"
    doc = f"DeepSpeed ZeRO stage {stage}{' with the optimizer state offloaded to the CPU' if offload else ''}."
    cls = type(
        f"DeepSpeedStage{stage}{'Offload' if offload else ''}Strategy",
        (DeepSpeedStrategy,),
        {"__init__": __init__, "name": name, "__doc__": doc},
    )
    cls.__module__ = __name__
    return cls


DeepSpeedStage1Strategy = _preset(1)
DeepSpeedStage2Strategy = _preset(2)
DeepSpeedStage3Strategy = _preset(3)
DeepSpeedStage2OffloadStrategy = _preset(2, offload=True)


@hookimpl
def register_roles(registry):  # type: ignore[no-untyped-def]
    registry.add("strategy", "deepspeed", DeepSpeedStrategy)
    registry.add("strategy", "deepspeed_stage_1", DeepSpeedStage1Strategy)
    registry.add("strategy", "deepspeed_stage_2", DeepSpeedStage2Strategy)
    registry.add("strategy", "deepspeed_stage_3", DeepSpeedStage3Strategy)
    registry.add("strategy", "deepspeed_stage_2_offload", DeepSpeedStage2OffloadStrategy)
