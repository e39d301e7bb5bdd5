"""ember-xla anywhere, torch_xla or not: the installed distribution, the error
when XLA is asked for but unusable, the role protocols, and the logic that does
not need a device (device parsing, sampler insertion, collectives), with fakes
standing in for the torch_xla calls only."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import textwrap
import warnings

import ember_xla
import pytest
import torch
from _xla_testing import ember_command, fake_xla
from ember_xla import _runtime
from ember_xla.accelerator import XLAAccelerator, create_accelerator
from ember_xla.strategies import XLADDPStrategy, XLALauncher, XLAStrategy, _spawn_function
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler, TensorDataset

import ember
from ember.plugin_manager import default_plugin_manager
from ember.roles import Accelerator, Strategy

TORCH_XLA_INSTALLED = importlib.util.find_spec("torch_xla") is not None


def run_python(code: str, env: dict[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def strategy_kwargs(devices: list[torch.device]) -> dict[str, object]:
    """The providers the trainer would hand a strategy factory, from ember's own registry."""
    registry = default_plugin_manager().build_registry()
    return {
        "accelerator": XLAAccelerator(),
        "precision": registry.create("precision", "32-true"),
        "checkpoint_io": registry.create("checkpoint_io", "torch"),
        "environment": registry.create("environment", "local"),
        "devices": devices,
        "num_nodes": 1,
    }


def ddp_in_replica(monkeypatch: pytest.MonkeyPatch, world_size: int = 2, ordinal: int = 1, **kwargs: object) -> XLADDPStrategy:
    """An xla_ddp strategy as a replica sees it, on a fake 2-replica runtime."""
    xla = fake_xla(world_size, ordinal)
    monkeypatch.setattr(_runtime, "load", lambda: xla)
    strategy = XLADDPStrategy(**strategy_kwargs([torch.device("xla", i) for i in range(world_size)]), **kwargs)  # type: ignore[arg-type]
    strategy._in_worker = True
    strategy.setup_environment()
    return strategy


# --------------------------------------------------------------------------- the installed distribution


def test_ember_plugins_lists_the_distribution_and_its_roles(tmp_path, clean_env):
    proc = subprocess.run([*ember_command(), "plugins", "--json"], cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (entry,) = [p for p in report["plugins"] if p["distribution"] == "ember-xla"]
    assert entry["name"] == "xla"
    assert entry["kind"] == "entrypoint"
    assert entry["status"] == "loaded"
    assert entry["version"] == importlib.metadata.version("ember-xla") == ember_xla.__version__
    assert {(r["kind"], r["name"]) for r in entry["roles"]} == {
        ("accelerator", "xla"),
        ("strategy", "xla"),
        ("strategy", "xla_ddp"),
        ("precision", "xla-bf16"),
    }


def test_loading_the_plugin_does_not_import_torch_xla(tmp_path, clean_env):
    proc = run_python(
        """
        import sys
        import ember_xla
        from ember.plugin_manager import default_plugin_manager
        registry = default_plugin_manager().build_registry()
        assert registry.entry("strategy", "xla_ddp").plugin == "xla", registry.entry("strategy", "xla_ddp")
        registry.create("strategy", "xla", accelerator=None, precision=None, checkpoint_io=None, environment=None)
        print("torch_xla" in sys.modules)
        """,
        clean_env,
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_auto_still_picks_the_cpu(tmp_path, clean_env):
    # Where torch_xla is installed, its import-time fallback to PJRT_DEVICE=CPU
    # must not make "auto" choose the XLA CPU client over ember's CPU accelerator.
    proc = run_python(
        """
        import ember
        trainer = ember.Trainer(accelerator="auto", logger=False, enable_progress_bar=False)
        print(trainer.strategy.accelerator.name, trainer.strategy.name)
        """,
        clean_env,
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cpu", "single_device"]


@pytest.mark.skipif(TORCH_XLA_INSTALLED, reason="torch_xla is installed here: the missing-torch_xla message cannot be seen")
def test_asking_for_xla_without_torch_xla_says_what_is_missing(no_cached_runtime):
    with pytest.raises(RuntimeError) as info:
        ember.Trainer(accelerator="xla", logger=False)
    message = str(info.value)
    assert "accelerator='xla' was requested" in message
    assert "torch_xla is not installed" in message
    assert torch.__version__ in message
    assert "ember-xla[tpu]" in message
    assert not XLAAccelerator.is_available()
    assert "torch_xla" not in sys.modules


def test_a_torch_xla_built_for_another_torch_is_named_in_the_error(monkeypatch, no_cached_runtime):
    # The torch_xla calls are faked: its spec is found, its import fails the way
    # a build for another torch does, and its metadata pins that torch.
    monkeypatch.setattr(_runtime.importlib.util, "find_spec", lambda name: object())

    def broken_import():
        raise ImportError("/site-packages/_XLAC.cpython-311-x86_64-linux-gnu.so: undefined symbol: _ZN5torch4jit17parseSchema")

    monkeypatch.setattr(_runtime, "_import", broken_import)
    monkeypatch.setattr(_runtime, "installed_version", lambda: "2.9.0")
    monkeypatch.setattr(_runtime, "required_torch", lambda: "torch==2.9.0")
    assert XLAAccelerator.is_available() is False
    with pytest.raises(RuntimeError) as info:
        create_accelerator()
    message = str(info.value)
    assert "torch_xla 2.9.0 is installed but does not import" in message
    assert "undefined symbol" in message
    assert "it requires torch==2.9.0" in message and f"torch {torch.__version__} is installed" in message


@pytest.mark.parametrize("failure", [RuntimeError("boom"), SystemError("bad build"), OSError("libtpu.so: cannot open")])
def test_is_available_never_raises(monkeypatch, no_cached_runtime, failure):
    monkeypatch.setattr(_runtime.importlib.util, "find_spec", lambda name: object())

    def broken_import():
        raise failure

    monkeypatch.setattr(_runtime, "_import", broken_import)
    assert XLAAccelerator.is_available() is False
    assert create_accelerator.is_available() is False


def test_device_type_query_failing_counts_as_unavailable(monkeypatch):
    xla = fake_xla()
    xla.xr.device_type = lambda: (_ for _ in ()).throw(RuntimeError("no runtime"))
    monkeypatch.setattr(_runtime, "load", lambda: xla)
    assert XLAAccelerator.is_available() is False
    assert "asking it for the device type failed" in (_runtime.unavailable_reason() or "")


def test_torch_xla_default_cpu_is_not_a_device_but_a_chosen_cpu_is(monkeypatch):
    xla = fake_xla(device_type="CPU")
    monkeypatch.setattr(_runtime, "load", lambda: xla)
    monkeypatch.setattr(_runtime, "_pjrt_device_defaulted", True)
    assert not XLAAccelerator.is_available()
    assert "PJRT_DEVICE" in (_runtime.unavailable_reason() or "")
    monkeypatch.setattr(_runtime, "_pjrt_device_defaulted", False)
    assert XLAAccelerator.is_available()


# --------------------------------------------------------------------------- protocols


def test_roles_satisfy_embers_protocols():
    assert isinstance(XLAAccelerator(), Accelerator)
    single = XLAStrategy(**strategy_kwargs([torch.device("xla", 0)]))  # type: ignore[arg-type]
    replicated = XLADDPStrategy(**strategy_kwargs([torch.device("xla", 0), torch.device("xla", 1)]))  # type: ignore[arg-type]
    assert isinstance(single, Strategy) and isinstance(replicated, Strategy)
    assert getattr(single, "launcher", None) is None
    launcher = replicated.launcher
    assert isinstance(launcher, XLALauncher)
    # ember.roles.Launcher is not runtime-checkable: check its two methods by hand.
    assert callable(launcher.should_launch) and callable(launcher.launch)
    assert launcher.should_launch() is True
    replicated._in_worker = True
    assert launcher.should_launch() is False


def test_the_single_device_strategy_refuses_several_devices():
    with pytest.raises(ValueError, match="xla_ddp"):
        XLAStrategy(**strategy_kwargs([torch.device("xla", 0), torch.device("xla", 1)]))  # type: ignore[arg-type]


def test_spawn_uses_torch_xla_launch_where_it_exists():
    xla = fake_xla()
    xla.xmp.spawn = "xmp.spawn"
    assert _spawn_function(xla) == "xmp.spawn"
    xla.torch_xla.launch = lambda fn, args=(), start_method="spawn": None
    assert _spawn_function(xla) is xla.torch_xla.launch


def test_before_the_launch_ranks_come_from_the_devices_not_the_runtime(monkeypatch):
    def no_runtime():
        raise AssertionError("the XLA runtime must not be touched before the replicas are spawned")

    monkeypatch.setattr(_runtime, "load", no_runtime)
    strategy = XLADDPStrategy(**strategy_kwargs([torch.device("xla", i) for i in range(4)]))  # type: ignore[arg-type]
    assert (strategy.world_size, strategy.global_rank, strategy.local_rank, strategy.is_global_zero) == (4, 0, 0, True)


# --------------------------------------------------------------------------- device parsing


@pytest.mark.parametrize(
    ("devices", "expected"),
    [(1, 1), ("1", 1), (4, 4), ("8", 8), ([0], 1), ([3], 1), ("auto", 3), (-1, 3), ("-1", 3), (None, 3)],
)
def test_parse_devices(monkeypatch, devices, expected):
    monkeypatch.setattr(_runtime, "load", lambda: fake_xla(device_type="CPU"))
    monkeypatch.setenv("CPU_NUM_DEVICES", "3")
    parsed = XLAAccelerator().parse_devices(devices)
    assert len(parsed) == expected and all(d.type == "xla" for d in parsed)
    if devices == [3]:
        assert parsed == [torch.device("xla", 3)]


@pytest.mark.parametrize(
    ("devices", "error"),
    [(0, ValueError), (-2, ValueError), ([0, 1], ValueError), ("two", ValueError), (True, TypeError), (1.5, TypeError)],
)
def test_parse_devices_rejects(monkeypatch, devices, error):
    monkeypatch.setattr(_runtime, "load", lambda: fake_xla(device_type="CPU"))
    with pytest.raises(error, match="devices="):
        XLAAccelerator().parse_devices(devices)


def test_auto_devices_on_an_unknown_pjrt_device_asks_for_a_count(monkeypatch):
    monkeypatch.setattr(_runtime, "load", lambda: fake_xla(device_type="NEURON"))
    with pytest.raises(RuntimeError, match="pass the number of devices"):
        XLAAccelerator().parse_devices("auto")


# --------------------------------------------------------------------------- sampler insertion


def dataset(n: int = 10) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1))


def test_a_sequential_loader_gets_this_replicas_slice(monkeypatch):
    strategy = ddp_in_replica(monkeypatch, world_size=2, ordinal=1)
    loader = DataLoader(dataset(), batch_size=2, num_workers=0, drop_last=True)
    out = strategy.process_dataloader(loader, "train")
    assert isinstance(out.sampler, DistributedSampler)
    assert (out.sampler.num_replicas, out.sampler.rank, out.sampler.shuffle) == (2, 1, False)
    assert list(out.sampler) == [1, 3, 5, 7, 9]
    assert (out.batch_size, out.drop_last) == (2, True)


def test_a_shuffled_loader_stays_shuffled(monkeypatch):
    strategy = ddp_in_replica(monkeypatch, world_size=2, ordinal=0)
    out = strategy.process_dataloader(DataLoader(dataset(), batch_size=2, shuffle=True), "train")
    assert isinstance(out.sampler, DistributedSampler) and out.sampler.shuffle is True
    assert sorted(out.sampler) == sorted(set(out.sampler)) and len(list(out.sampler)) == 5


def test_loaders_left_alone(monkeypatch):
    strategy = ddp_in_replica(monkeypatch)

    class Stream(IterableDataset):
        def __iter__(self):
            yield from range(3)

    stream = DataLoader(Stream())
    assert strategy.process_dataloader(stream, "train") is stream
    already = DataLoader(dataset(), sampler=DistributedSampler(dataset(), num_replicas=2, rank=1))
    assert strategy.process_dataloader(already, "train") is already
    replacement = DataLoader(dataset(), sampler=RandomSampler(dataset(), replacement=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert strategy.process_dataloader(replacement, "train") is replacement
    assert any("replacement" in str(w.message) for w in caught)


def test_a_custom_sampler_is_kept_with_a_warning(monkeypatch):
    strategy = ddp_in_replica(monkeypatch)

    class Evens(Sampler[int]):
        def __iter__(self):
            return iter(range(0, 10, 2))

        def __len__(self) -> int:
            return 5

    loader = DataLoader(dataset(), sampler=Evens())
    with pytest.warns(UserWarning, match="Evens"):
        assert strategy.process_dataloader(loader, "val") is loader


def test_no_sampler_with_one_replica_or_when_switched_off(monkeypatch):
    loader = DataLoader(dataset(), batch_size=2)
    assert ddp_in_replica(monkeypatch, world_size=1, ordinal=0).process_dataloader(loader, "train") is loader
    assert ddp_in_replica(monkeypatch, use_distributed_sampler=False).process_dataloader(loader, "train") is loader


# --------------------------------------------------------------------------- collectives and steps


def test_reduce_all_gather_broadcast_barrier(monkeypatch):
    strategy = ddp_in_replica(monkeypatch, world_size=2, ordinal=0)
    xm = strategy.xla.xm
    assert strategy.reduce(torch.tensor(3.0), "mean").item() == 3.0
    assert strategy.reduce(torch.tensor(3.0), "sum").item() == 6.0
    assert strategy.reduce(torch.tensor(4), "mean").dtype.is_floating_point
    strategy.reduce(torch.tensor(1.0), "max")
    assert [c[1] for c in xm.calls if c[0] == "all_reduce"] == ["sum", "sum", "sum", "max"]
    with pytest.raises(ValueError, match="op='median'"):
        strategy.reduce(torch.tensor(1.0), "median")
    gathered = strategy.all_gather(torch.tensor([1.0, 2.0]))
    assert gathered.shape == (2, 2) and gathered[1].tolist() == [2.0, 3.0]
    assert strategy.broadcast({"best": 0.5}, src=0) == {"best": 0.5}
    strategy.barrier("save_checkpoint")
    assert ("rendezvous", "ember.barrier.save_checkpoint", b"") in xm.calls


def test_gradients_are_averaged_after_every_backward(monkeypatch):
    strategy = ddp_in_replica(monkeypatch, world_size=2, ordinal=0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    strategy.setup_optimizers([optimizer])
    strategy.backward(model(torch.ones(1, 2)).sum(), model)
    assert ("reduce_gradients", optimizer) in strategy.xla.xm.calls
    strategy.optimizer_step(optimizer)
    assert strategy.xla.xm.calls[-1] == ("sync",)


def test_checkpoints_are_written_with_cpu_tensors_by_rank_zero_only(monkeypatch, tmp_path):
    zero = ddp_in_replica(monkeypatch, world_size=2, ordinal=0)
    zero.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, str(tmp_path / "a.ckpt"))
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0]
    one = ddp_in_replica(monkeypatch, world_size=2, ordinal=1)
    one.save_checkpoint({"epoch": 1}, str(tmp_path / "b.ckpt"))
    assert not (tmp_path / "b.ckpt").exists()


def test_xla_bf16_precision_is_registered():
    precision = default_plugin_manager().build_registry().create("precision", "xla-bf16")
    assert precision.name == "xla-bf16"
    assert precision.convert_module(torch.nn.Linear(2, 2)).weight.dtype == torch.bfloat16
    assert precision.convert_input(torch.ones(2)).dtype == torch.bfloat16


def test_auto_strategy_on_xla_is_an_xla_strategy():
    from ember_xla.accelerator import XLAAccelerator

    assert XLAAccelerator.default_strategy(1, 1) == "xla"
    assert XLAAccelerator.default_strategy(8, 1) == "xla_ddp"
    assert XLAAccelerator.default_strategy(1, 2) == "xla_ddp"


def test_the_launcher_runs_a_replica_and_brings_its_run_back(monkeypatch, make_trainer, tiny_module):
    """The launcher marks the replica's strategy through its public
    ``become_replica()`` and ships the run back with ember.launch: a real fit,
    with torch_xla's launch replaced by a call in this process."""
    xla = fake_xla(world_size=1)
    seen = []

    def launch(fn, args, start_method):
        seen.append(start_method)
        fn(0, *args)

    xla.torch_xla.launch = launch
    monkeypatch.setattr(_runtime, "load", lambda: xla)
    strategy = XLADDPStrategy(devices=1)
    trainer = make_trainer(strategy=strategy, accelerator="cpu", max_epochs=1, limit_val_batches=0)
    before = {k: v.clone() for k, v in tiny_module.state_dict().items()}
    assert strategy.launcher.should_launch() and not strategy.in_worker
    trainer.fit(tiny_module)
    assert seen == ["spawn"] and not strategy.in_worker  # the replica marked its own copy
    assert trainer.global_step > 0 and any(not torch.equal(before[k], v) for k, v in tiny_module.state_dict().items())
