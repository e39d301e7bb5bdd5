"""Behaviour of the Lightning names the API-surface table requires: Trainer
arguments and properties, Module and DataModule hooks, ``ember.utilities``.
Each runs real (tiny) training; Lightning is used only as a reference value."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callback import Logger
from ember.plugins.checkpoint_io.torch_io import CheckpointLoadError


def _data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _loader(n: int = 32, bs: int = 8) -> DataLoader:
    return DataLoader(_data(n), batch_size=bs)


class Net(ember.Module):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)
        self.seen: list[Any] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.seen.append(self.trainer.is_last_batch)
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _trainer(tmp_path: Path, **kwargs: Any) -> ember.Trainer:
    base = dict(
        default_root_dir=str(tmp_path), max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return ember.Trainer(**{**base, **kwargs})


class Recorder(Logger):
    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, metrics))

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.params.append(params)


# --------------------------------------------------------------------------- Trainer
def test_trainer_views_of_the_run(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    assert trainer.model is None and trainer.world_size == 1 and trainer.device_ids == [0] and trainer.num_devices == 1
    assert trainer.node_rank == 0 and trainer.distributed_sampler_kwargs is None and trainer.scaler is None
    assert trainer.precision_plugin is trainer.strategy.precision
    model, train, val = Net(), _loader(24), _loader(16)
    trainer.fit(model, train, val)
    assert trainer.model is model  # single device: the placed module is the module
    assert trainer.train_dataloader is not None and trainer.val_dataloaders is not None
    assert model.seen == [False, False, True]  # is_last_batch, read inside training_step
    assert trainer.enable_validation and not trainer.evaluating and not trainer.received_sigterm
    assert trainer.early_stopping_callbacks == [] and trainer.ckpt_path is None
    trainer.validate(model, dataloaders=val, verbose=False)
    assert trainer.val_dataloaders is not None and trainer.test_dataloaders is None
    trainer.predict(model, dataloaders=DataLoader(torch.randn(8, 4), batch_size=4))
    assert trainer.predict_dataloaders is not None


def test_init_module_builds_on_the_device_in_the_true_precision(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, precision="bf16-true")
    with trainer.init_module():
        layer = torch.nn.Linear(2, 2)
    assert layer.weight.dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32
    with _trainer(tmp_path, precision="bf16-mixed").init_module():
        assert torch.nn.Linear(2, 2).weight.dtype == torch.float32


def test_reload_dataloaders_every_n_epochs(tmp_path: Path) -> None:
    class Counting(Net):
        calls = 0

        def train_dataloader(self) -> DataLoader:
            type(self).calls += 1
            return _loader(16)

    _trainer(tmp_path, max_epochs=5, reload_dataloaders_every_n_epochs=2).fit(Counting())
    assert Counting.calls == 3  # epochs 0 (first load), 2 and 4
    Counting.calls = 0
    _trainer(tmp_path, max_epochs=5).fit(Counting())
    assert Counting.calls == 1


def test_enable_autolog_hparams(tmp_path: Path) -> None:
    on, off = Recorder(), Recorder()
    _trainer(tmp_path, logger=on).fit(Net(lr=0.05), _loader())
    _trainer(tmp_path, logger=off, enable_autolog_hparams=False).fit(Net(lr=0.05), _loader())
    assert on.params == [{"lr": 0.05}] and off.params == []


def test_barebones(tmp_path: Path) -> None:
    trainer = ember.Trainer(default_root_dir=str(tmp_path), max_epochs=1, barebones=True)
    assert trainer.loggers == [] and trainer.checkpoint_callbacks == [] and trainer.progress_bar_callback is None
    assert trainer.num_sanity_val_steps == 0 and not any(type(c).__name__ == "ModelSummary" for c in trainer.callbacks)
    trainer.fit(Net(), _loader())
    with pytest.raises(ValueError, match="barebones.*enable_checkpointing"):
        ember.Trainer(barebones=True, enable_checkpointing=True)
    with pytest.raises(ValueError, match="barebones.*detect_anomaly"):
        ember.Trainer(barebones=True, detect_anomaly=True)


def test_use_distributed_sampler_reaches_the_strategy(tmp_path: Path) -> None:
    from ember.strategies import DDPStrategy, ParallelStrategy

    loader = DataLoader(_data(8), batch_size=2)
    samplers = {}
    for flag in (True, False):
        trainer = _trainer(tmp_path, strategy=DDPStrategy(devices=2), use_distributed_sampler=flag, accelerator="cpu")
        assert isinstance(trainer.strategy, ParallelStrategy) and trainer.strategy.use_distributed_sampler is flag
        trainer.strategy._ranks = (0, 0, 0, 2)  # rank 0 of 2, as a launched worker would be
        samplers[flag] = type(trainer.strategy.process_dataloader(loader, "fit").sampler).__name__
    assert samplers == {True: "DistributedSampler", False: "SequentialSampler"}
    assert not isinstance(_trainer(tmp_path).strategy, ParallelStrategy)


def test_sync_batchnorm_converts_under_a_parallel_strategy(tmp_path: Path) -> None:
    from ember.strategies import DDPStrategy
    from ember.trainer_compat import convert_sync_batchnorm, setup_compat

    def bn_net() -> Net:
        net = Net()
        net.norm = torch.nn.BatchNorm1d(1)
        return net

    # The run's set-up step decides: converted under a parallel strategy, left alone on one device.
    parallel, single = bn_net(), bn_net()
    setup_compat(_trainer(tmp_path, strategy=DDPStrategy(devices=2), sync_batchnorm=True, accelerator="cpu"), parallel)
    setup_compat(_trainer(tmp_path, sync_batchnorm=True), single)
    assert isinstance(parallel.norm, torch.nn.SyncBatchNorm) and type(single.norm) is torch.nn.BatchNorm1d

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Sequential(torch.nn.BatchNorm1d(4)))
    net[1].running_mean.fill_(2.0)
    convert_sync_batchnorm(net)
    assert isinstance(net[1], torch.nn.SyncBatchNorm) and isinstance(net[2][0], torch.nn.SyncBatchNorm)
    assert torch.equal(net[1].running_mean, torch.full((4,), 2.0))  # statistics carried over


def test_weights_only_false_loads_a_checkpoint_with_objects(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    model = Net()
    trainer.fit(model, _loader())
    path = tmp_path / "a.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    ckpt["extra"] = {"an object": Path("x")}  # not loadable with weights_only=True
    torch.save(ckpt, path)
    with pytest.raises(CheckpointLoadError, match="contains objects outside the types ember allows"):
        _trainer(tmp_path).validate(Net(), _loader(), ckpt_path=str(path), verbose=False)
    _trainer(tmp_path).validate(Net(), _loader(), ckpt_path=str(path), verbose=False, weights_only=False)
    assert torch.equal(Net.load_from_checkpoint(path, weights_only=False).layer.weight, model.layer.weight)


def test_benchmark_detect_anomaly_and_inference_mode(tmp_path: Path) -> None:
    class Probe(Net):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.inference = torch.is_inference_mode_enabled()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.anomaly = torch.is_anomaly_enabled()
            return super().training_step(batch, batch_idx)

    before = torch.backends.cudnn.benchmark
    try:
        probe = Probe()
        _trainer(tmp_path, benchmark=True, detect_anomaly=True, inference_mode=False).fit(probe, _loader(), _loader())
        assert torch.backends.cudnn.benchmark is True and probe.anomaly and not probe.inference
        probe = Probe()
        _trainer(tmp_path, benchmark=False).fit(probe, _loader(), _loader())
        assert torch.backends.cudnn.benchmark is False and not probe.anomaly and probe.inference
    finally:
        torch.backends.cudnn.benchmark = before


def test_new_arguments_are_validated() -> None:
    from ember.trainer_args import TrainerArgumentError

    with pytest.raises(TrainerArgumentError, match="reload_dataloaders_every_n_epochs"):
        ember.Trainer(reload_dataloaders_every_n_epochs=-1)
    with pytest.raises(TrainerArgumentError, match="sync_batchnorm"):
        ember.Trainer(sync_batchnorm="yes")


# --------------------------------------------------------------------------- Module and DataModule
def test_model_mode_hooks(tmp_path: Path) -> None:
    class KeepsDropoutOn(Net):
        def __init__(self) -> None:
            super().__init__()
            self.modes: list[bool] = []
            self.zeroed = 0

        def on_validation_model_eval(self) -> None:
            self.train()  # e.g. Monte-Carlo dropout

        def on_validation_model_zero_grad(self) -> None:
            self.zeroed += 1
            super().on_validation_model_zero_grad()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.modes.append(self.training)

    model = KeepsDropoutOn()
    _trainer(tmp_path, max_epochs=2).fit(model, _loader(), _loader(8))
    assert model.modes == [True, True] and model.zeroed == 2 and model.training
    plain = Net()
    trainer = _trainer(tmp_path)
    trainer.validate(plain, _loader(8), verbose=False)
    assert plain.training  # restored after validate()


def test_batch_transfer_hooks(tmp_path: Path) -> None:
    class Custom(Net):
        calls: list[str] = []

        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            self.calls.append("before")
            return [batch[0] * 0, batch[1]]

        def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
            self.calls.append(f"transfer:{device.type}:{dataloader_idx}")
            return super().transfer_batch_to_device(batch, device, dataloader_idx)

        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            self.calls.append("after")
            assert not batch[0].any()
            return batch

    model = Custom()
    _trainer(tmp_path).fit(model, _loader(8))
    assert model.calls == ["before", "transfer:cpu:0", "after"]


def test_configure_model_runs_before_placement(tmp_path: Path) -> None:
    class Lazy(Net):
        def configure_model(self) -> None:
            if not hasattr(self, "head"):
                self.head = torch.nn.Linear(1, 1)

    model = Lazy()
    _trainer(tmp_path).fit(model, _loader(8))
    assert isinstance(model.head, torch.nn.Linear)


def test_module_small_names(tmp_path: Path) -> None:
    model = Net()
    assert model.on_gpu is False and model.device_mesh is None and model.strict_loading is True
    assert model.CHECKPOINT_HYPER_PARAMS_KEY == "hyper_parameters"
    model.remove_ignored_hparams(["lr"])
    assert "lr" not in model.hparams
    gathered = model.all_gather({"a": torch.ones(2), "b": 3})
    assert torch.equal(gathered["a"], torch.ones(2)) and int(gathered["b"]) == 3


def test_log_dict_takes_lightnings_options(tmp_path: Path) -> None:
    class Logs(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log_dict({"a": loss, "b": loss * 2}, prog_bar=True, on_step=False, on_epoch=True, batch_size=8)
            return loss

    trainer = _trainer(tmp_path)
    trainer.fit(Logs(), _loader())
    assert {"a", "b"} <= set(trainer.callback_metrics) and {"a", "b"} <= set(trainer.progress_bar_metrics)


def test_load_from_checkpoint_hparams_file_and_strict_loading(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    trainer.fit(Net(lr=0.3), _loader())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    (tmp_path / "h.yaml").write_text("lr: 0.7\n")
    assert Net.load_from_checkpoint(tmp_path / "m.ckpt", hparams_file=tmp_path / "h.yaml").hparams.lr == 0.7

    class Bigger(Net):
        strict_loading = False

        def __init__(self, lr: float = 0.1) -> None:
            super().__init__(lr)
            self.extra = torch.nn.Linear(1, 1)

    Bigger.load_from_checkpoint(tmp_path / "m.ckpt")  # missing 'extra' is allowed by strict_loading=False
    _trainer(tmp_path).validate(Bigger(), _loader(8), ckpt_path=str(tmp_path / "m.ckpt"), verbose=False)


def test_datamodule_from_datasets_and_load_from_checkpoint(tmp_path: Path) -> None:
    class DM(ember.DataModule):
        def __init__(self, size: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()

    dm = DM.from_datasets(train_dataset=_data(16), val_dataset=_data(8), batch_size=4, size=5)
    trainer = _trainer(tmp_path)
    trainer.fit(Net(), datamodule=dm)
    assert trainer.num_training_batches == 4 and trainer.num_val_batches == [2]
    trainer.save_checkpoint(tmp_path / "d.ckpt")
    assert DM.load_from_checkpoint(tmp_path / "d.ckpt").hparams.size == 5


def test_datamodule_on_exception(tmp_path: Path) -> None:
    class DM(ember.DataModule):
        seen: list[BaseException] = []

        def train_dataloader(self) -> DataLoader:
            return _loader()

        def on_exception(self, exception: BaseException) -> None:
            self.seen.append(exception)

    class Boom(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path).fit(Boom(), datamodule=DM())
    assert len(DM.seen) == 1 and str(DM.seen[0]) == "boom"


# --------------------------------------------------------------------------- utilities
def test_rank_zero_helpers(caplog: pytest.LogCaptureFixture) -> None:
    from ember.utilities import rank_zero_debug, rank_zero_info, rank_zero_only, rank_zero_warn

    @rank_zero_only
    def where() -> str:
        return "ran"

    saved = rank_zero_only.rank
    try:
        rank_zero_only.rank = 0
        assert where() == "ran"
        with caplog.at_level(logging.DEBUG, logger="ember"):
            rank_zero_info("hello %s", "info")
            rank_zero_debug("hello debug")
        assert "hello info" in caplog.text and "hello debug" in caplog.text
        with pytest.warns(UserWarning, match="careful"):
            rank_zero_warn("careful")
        rank_zero_only.rank = 1
        assert where() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rank_zero_warn("not on rank 1")
    finally:
        rank_zero_only.rank = saved


def test_trainer_sets_rank_zero_only_rank(tmp_path: Path) -> None:
    from ember.utilities import rank_zero_only

    rank_zero_only.rank = 3
    _trainer(tmp_path).fit(Net(), _loader(8))
    assert rank_zero_only.rank == 0


def test_grad_norm_and_measure_flops_match_lightning() -> None:
    pl_utils = pytest.importorskip("pytorch_lightning.utilities")
    from ember.utilities import grad_norm, measure_flops

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1, bias=False))
    net(torch.randn(5, 4)).sum().backward()
    for p in (1, 2, "inf"):
        ours, theirs = grad_norm(net, p), pl_utils.grad_norm(net, p)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    fwd = lambda: net(torch.randn(5, 4))  # noqa: E731
    assert measure_flops(net, fwd) == pl_utils.measure_flops(net, fwd) > 0


def test_seed_everything_verbose(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ember"):
        ember.seed_everything(7)
        ember.seed_everything(8, verbose=False)
    assert "Seed set to 7" in caplog.text and "8" not in caplog.text


def test_namespaces_port_lightning_imports() -> None:
    from ember.callbacks import Checkpoint, ModelCheckpoint, TQDMProgressBar
    from ember.loggers import CSVLogger, MLFlowLogger, MLflowLogger
    from ember.profilers import PassThroughProfiler, PyTorchProfiler, TorchProfiler
    from ember.strategies import DDPStrategy, ParallelStrategy, SingleDeviceStrategy

    assert MLFlowLogger is MLflowLogger and PyTorchProfiler is TorchProfiler and CSVLogger.__module__.startswith("ember.plugins")
    assert isinstance(ModelCheckpoint(), Checkpoint) and issubclass(DDPStrategy, ParallelStrategy)
    assert not issubclass(SingleDeviceStrategy, ParallelStrategy)
    assert TQDMProgressBar(refresh_rate=5).refresh_rate == 5 and not TQDMProgressBar(refresh_rate=0).is_enabled
    fn = lambda: 1  # noqa: E731
    assert PassThroughProfiler().wrap("hook", "owner", fn) is fn
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        from ember import callbacks

        callbacks.Nope  # noqa: B018


@pytest.mark.slow  # subprocesses
def test_namespaces_import_lazily_and_python_m_ember_runs() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ember.callbacks, ember.loggers, ember.strategies, ember.profilers, ember.utilities; "
        "print(sorted(m for m in sys.modules if m.startswith('ember.plugins.') or m in ('torch', 'tensorboard')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    proc = subprocess.run([sys.executable, "-m", "ember", "--help"], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 0 and "fit" in proc.stdout


@pytest.mark.slow  # the dynamo ONNX exporter takes seconds
def test_to_onnx_without_a_path_returns_the_program(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    model = Net()
    model.example_input_array = torch.randn(2, 4)
    program = model.to_onnx()
    assert type(program).__name__ == "ONNXProgram" and not list(tmp_path.iterdir())
    program.save(str(tmp_path / "m.onnx"))
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_logger_prefix_and_profiler_base(tmp_path: Path) -> None:
    from ember.loggers import CSVLogger
    from ember.profilers import Profiler, SimpleProfiler

    logger = CSVLogger(tmp_path, prefix="run")

    class Logs(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss)
            return loss

    class Counting(Profiler):
        def __init__(self) -> None:
            super().__init__(dirpath=tmp_path, filename="p")
            self.actions: dict[str, int] = {}

        def start(self, action_name: str) -> None:
            self.actions[action_name] = self.actions.get(action_name, 0) + 1

    profiler = Counting()
    _trainer(tmp_path, logger=logger, log_every_n_steps=1, profiler=profiler).fit(Logs(), _loader())
    header = Path(logger.log_dir, "metrics.csv").read_text().splitlines()[0]
    assert "run-loss" in header and ",loss" not in header
    assert profiler.actions["on_log_metrics:logger:CSVLogger"] == 4 and isinstance(SimpleProfiler(), Profiler)
    with profiler.profile("mine"):
        pass
    assert profiler.actions["mine"] == 1


def test_strategies_take_lightnings_argument_names(tmp_path: Path) -> None:
    from ember.strategies import DDPStrategy, FSDPStrategy, ParallelStrategy, SingleDeviceStrategy

    env = object()
    ddp = DDPStrategy(parallel_devices=[torch.device("cpu")] * 2, cluster_environment=env, precision_plugin=None)
    assert ddp.parallel_devices == [torch.device("cpu")] * 2 and ddp.environment is env
    with pytest.raises(TypeError, match="parallel_devices"):
        DDPStrategy(devices=2, parallel_devices=[torch.device("cpu")])
    assert FSDPStrategy(parallel_devices=[torch.device("cpu")] * 2).parallel_devices == [torch.device("cpu")] * 2
    base = ParallelStrategy(parallel_devices=[torch.device("cpu")], cluster_environment=env)
    assert base.environment is env and base.precision is None
    trainer = _trainer(tmp_path, strategy=SingleDeviceStrategy(device="cpu"))
    assert trainer.strategy.precision is not None and trainer.strategy.accelerator is not None  # filled in by the Trainer
    trainer.fit(Net(), _loader(8))


@pytest.mark.slow  # imports TensorBoard and starts an offline W&B run (seconds each)
def test_tensorboard_log_graph_and_wandb_lightning_names(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ember.loggers import TensorBoardLogger, WandbLogger

    tb = TensorBoardLogger(tmp_path / "tb", log_graph=True)
    model = Net()
    model.example_input_array = torch.randn(2, 4)
    _trainer(tmp_path, logger=tb).fit(model, _loader(8))
    events = EventAccumulator(tb.log_dir)
    events.Reload()
    assert events.Graph() is not None and any(node.op for node in events.Graph().node)

    wandb = pytest.importorskip("wandb")
    logger = WandbLogger(version="ember-run-1", dir=tmp_path / "wb", offline=True, anonymous=True)
    assert logger.version == "ember-run-1" and logger.save_dir == str(tmp_path / "wb")
    run = wandb.init(mode="offline", dir=str(tmp_path / "own"), reinit="create_new")
    try:
        adopted = WandbLogger(experiment=run)
        assert adopted.experiment is run and adopted.version == run.id
    finally:
        run.finish()


def test_pytorch_profiler_lightning_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ember.profilers import PyTorchProfiler

    profiler = PyTorchProfiler(
        dirpath=tmp_path / "p", export_to_chrome=False, group_by_input_shapes=True, sort_by_key="cpu_time_total",
        table_kwargs={"max_name_column_width": 30}, wait=0, warmup=0, active=2,
    )  # fmt: skip
    assert profiler.filename == "trace" and profiler.record_shapes and profiler.sort_by == "cpu_time_total"
    _trainer(tmp_path, profiler=profiler).fit(Net(), _loader())
    assert profiler.trace_paths == [] and not list((tmp_path / "p").glob("*.json"))  # export_to_chrome=False
    assert "Input Shapes" in capsys.readouterr().out  # the table grouped by shapes


def test_simple_profiler_extended(tmp_path: Path) -> None:
    from ember.profilers import SimpleProfiler

    reports = {}
    for extended in (True, False):
        profiler = SimpleProfiler(extended=extended)
        _trainer(tmp_path, profiler=profiler).fit(Net(), _loader(8))
        reports[extended] = profiler.summary()
    assert "% run" in reports[True] and "% run" not in reports[False] and "mean" in reports[False]
