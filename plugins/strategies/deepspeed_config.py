"""The DeepSpeed config that :class:`~ember.plugins.strategies.deepspeed.DeepSpeedStrategy`
builds from its keyword arguments (Lightning's flat names, one per config key).

Used only when no ``config=`` is given; a user config is taken as it is.
Nothing here imports DeepSpeed (:func:`apply_runtime_options` does, at set-up).

Which keyword goes where:

- ``zero_optimization=False``: no ``zero_optimization`` section (ZeRO off).
  Otherwise the section holds ``stage``, ``contiguous_gradients``,
  ``overlap_comm``, ``allgather_partitions``, ``reduce_scatter``,
  ``allgather_bucket_size``, ``reduce_bucket_size`` and ``sub_group_size``.
- ``offload_optimizer``: ``offload_optimizer = {device: offload_optimizer_device,
  nvme_path, buffer_count: optimizer_buffer_count, pin_memory}``.
- ``offload_parameters`` (stage 3): ``offload_param = {device:
  offload_params_device, nvme_path, buffer_count: params_buffer_count,
  buffer_size: params_buffer_size, max_in_cpu, pin_memory}``. ``remote_device``
  (stage 3; ``"cpu"`` or ``"nvme"``) sets where the parameter partitions live
  when ``offload_parameters`` is not given.
- An ``nvme`` device adds the ``aio`` section: ``block_size``, ``queue_depth``,
  ``single_submit``, ``overlap_events``, ``thread_count``.
- ``zero_allow_untested_optimizer`` goes to the top level.
- ``precision="16-mixed"``: ``fp16 = {enabled, loss_scale, initial_scale_power,
  loss_scale_window, hysteresis, min_loss_scale}``.
- ``partition_activations``, ``cpu_checkpointing``,
  ``contiguous_memory_optimization``, ``synchronize_checkpoint_boundary``: the
  ``activation_checkpointing`` section; when any is set,
  ``deepspeed.checkpointing`` is configured from it at set-up (it then applies
  to ``deepspeed.checkpointing.checkpoint`` in your model).
- ``logging_level``: the level of DeepSpeed's logger, set at set-up.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

#: Lightning's DeepSpeedStrategy keywords that this module turns into config (with Lightning's defaults).
OPTION_DEFAULTS: dict[str, Any] = {
    "zero_optimization": True,
    "remote_device": None,
    "offload_params_device": "cpu",
    "nvme_path": "/local_nvme",
    "params_buffer_count": 5,
    "params_buffer_size": 100_000_000,
    "max_in_cpu": 1_000_000_000,
    "offload_optimizer_device": "cpu",
    "optimizer_buffer_count": 4,
    "block_size": 1_048_576,
    "queue_depth": 8,
    "single_submit": False,
    "overlap_events": True,
    "thread_count": 1,
    "pin_memory": False,
    "sub_group_size": 1_000_000_000_000,
    "contiguous_gradients": True,
    "overlap_comm": True,
    "allgather_partitions": True,
    "reduce_scatter": True,
    "allgather_bucket_size": 200_000_000,
    "reduce_bucket_size": 200_000_000,
    "zero_allow_untested_optimizer": True,
    "logging_level": 30,  # logging.WARN
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
    "partition_activations": False,
    "cpu_checkpointing": False,
    "contiguous_memory_optimization": False,
    "synchronize_checkpoint_boundary": False,
}

_DEVICES = ("cpu", "nvme")
_ACTIVATION_KEYS = ("partition_activations", "cpu_checkpointing", "contiguous_memory_optimization", "synchronize_checkpoint_boundary")
_LOSS_SCALE_KEYS = ("loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis", "min_loss_scale")


def collect_options(values: dict[str, Any]) -> dict[str, Any]:
    """The config keywords out of ``values`` (the strategy's ``locals()``), checked."""
    options = {name: values[name] for name in OPTION_DEFAULTS}
    for key in ("offload_params_device", "offload_optimizer_device"):
        if options[key] not in _DEVICES:
            raise ValueError(f"DeepSpeedStrategy({key}={options[key]!r}): use 'cpu' or 'nvme'.")
    remote = options["remote_device"]
    if remote is not None and remote not in _DEVICES:
        raise ValueError(f"DeepSpeedStrategy(remote_device={remote!r}): use 'cpu' or 'nvme' (or None: the training device).")
    return options


def zero_section(options: dict[str, Any], stage: int, offload_optimizer: bool, offload_parameters: bool) -> dict[str, Any] | None:
    """The ``zero_optimization`` section (``None`` with ``zero_optimization=False``)."""
    if not options["zero_optimization"]:
        return None
    zero: dict[str, Any] = {"stage": stage}
    for key in ("contiguous_gradients", "overlap_comm", "allgather_partitions", "reduce_scatter"):
        zero[key] = bool(options[key])
    for key in ("allgather_bucket_size", "reduce_bucket_size", "sub_group_size"):
        zero[key] = int(options[key])
    if offload_optimizer:
        zero["offload_optimizer"] = {
            "device": options["offload_optimizer_device"],
            "nvme_path": options["nvme_path"],
            "buffer_count": options["optimizer_buffer_count"],
            "pin_memory": options["pin_memory"],
        }
    remote = options["remote_device"]
    if remote is not None and stage != 3:
        raise ValueError(f"DeepSpeedStrategy(remote_device={remote!r}) needs ZeRO stage 3 (it is where parameter partitions live).")
    if offload_parameters or remote is not None:
        zero["offload_param"] = {
            "device": options["offload_params_device"] if offload_parameters else remote,
            "nvme_path": options["nvme_path"],
            "buffer_count": options["params_buffer_count"],
            "buffer_size": options["params_buffer_size"],
            "max_in_cpu": options["max_in_cpu"],
            "pin_memory": options["pin_memory"],
        }
    return zero


def build_config(options: dict[str, Any], stage: int, offload_optimizer: bool, offload_parameters: bool, precision: str) -> dict[str, Any]:
    """The config sections that come from the keywords (the strategy adds batch
    sizes, clipping and the CPU optimizer switches)."""
    config: dict[str, Any] = {"zero_allow_untested_optimizer": bool(options["zero_allow_untested_optimizer"])}
    zero = zero_section(options, stage, offload_optimizer, offload_parameters)
    if zero is not None:
        config["zero_optimization"] = zero
        devices = [zero.get(k, {}).get("device") for k in ("offload_optimizer", "offload_param")]
        if "nvme" in devices:
            config["aio"] = {k: options[k] for k in ("block_size", "queue_depth", "single_submit", "overlap_events", "thread_count")}
    if precision == "16-mixed":
        config["fp16"] = {"enabled": True, **{k: options[k] for k in _LOSS_SCALE_KEYS}}
    elif precision in ("bf16-mixed", "bf16-true"):
        config["bf16"] = {"enabled": True}
    elif precision not in ("32-true", "32"):
        raise ValueError(f"strategy='deepspeed' supports precision 32-true, 16-mixed, bf16-mixed and bf16-true, not {precision!r}.")
    config["activation_checkpointing"] = {k: bool(options[k]) for k in _ACTIVATION_KEYS}
    return config


def apply_runtime_options(deepspeed: Any, options: dict[str, Any], config: dict[str, Any]) -> None:
    """What is not config: DeepSpeed's logger level, and ``deepspeed.checkpointing``
    configured from the ``activation_checkpointing`` section when it asks for anything."""
    deepspeed.utils.logging.logger.setLevel(options["logging_level"])
    activation = config.get("activation_checkpointing") or {}
    if any(activation.get(k) for k in _ACTIVATION_KEYS):
        deepspeed.checkpointing.configure(
            None,
            partition_activations=bool(activation.get("partition_activations")),
            contiguous_checkpointing=bool(activation.get("contiguous_memory_optimization")),
            checkpoint_in_cpu=bool(activation.get("cpu_checkpointing")),
            synchronize=bool(activation.get("synchronize_checkpoint_boundary")),
        )


def engine_config(strategy: Any, trainer: Any) -> dict[str, Any]:
    """The config ``deepspeed.initialize`` gets: the strategy's ``config=``
    (copied) or one built from its keywords and the trainer (clipping,
    precision, CPU Adam), with the batch-size keys DeepSpeed needs filled in
    (micro batch from the training dataloader, accumulation from the trainer)."""
    accumulate = trainer.accumulate_grad_batches
    micro = micro_batch_size(trainer, strategy.logging_batch_size_per_gpu)
    on_cpu = strategy.root_device.type == "cpu"
    if strategy.user_config is not None:
        config = json.loads(json.dumps(strategy.user_config))
    else:
        name = strategy.precision.name if strategy.precision is not None else "32-true"
        config = build_config(strategy.options, strategy.stage, strategy.offload_optimizer, strategy.offload_parameters, name)
        config.update({"steps_per_print": 2**31 - 1, "wall_clock_breakdown": False})
        clip = trainer.gradient_clip_val
        if clip and (trainer.gradient_clip_algorithm or "norm") != "norm":
            raise ValueError("strategy='deepspeed' clips gradients by norm only (gradient_clip_algorithm='norm').")
        # Always explicit: DeepSpeed's own default is to clip at norm 1.0.
        config["gradient_clipping"] = float(clip) if clip else 0.0
        if on_cpu and strategy.cpu_torch_adam:
            config["torch_adam"] = True
            config["zero_force_ds_cpu_optimizer"] = False
    config.setdefault("train_micro_batch_size_per_gpu", micro)
    config.setdefault("gradient_accumulation_steps", accumulate)
    if "train_batch_size" not in config:
        config["train_batch_size"] = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * strategy.world_size
    if int(config["gradient_accumulation_steps"]) != accumulate:
        warnings.warn(
            f"The DeepSpeed config says gradient_accumulation_steps={config['gradient_accumulation_steps']} but the trainer "
            f"accumulates {accumulate} batch(es); ember's loop decides when the optimizer steps.",
            stacklevel=4,
        )
    return config


def micro_batch_size(trainer: Any, fallback: int | None) -> int:
    """The training dataloader's batch size, else ``fallback``, else 1."""
    loader = trainer.train_dataloader
    size = getattr(loader, "batch_size", None)
    if size is None:
        batch_sampler = getattr(loader, "batch_sampler", None)
        size = getattr(batch_sampler, "batch_size", None)
    return int(size or fallback or 1)
