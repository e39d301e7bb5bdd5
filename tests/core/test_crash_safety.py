"""Crash safety of checkpoints: processes killed with SIGKILL at random
moments, writes that fail midway, and files that are damaged, foreign,
incompatible or malicious.

SIGKILL trials: ``EMBER_SIGKILL_TRIALS`` (default 12, about 30 s on 2 idle CPU
cores; two children run at a time), each killed at a random moment after its
first step's checkpoints were written. ``EMBER_SIGKILL_TRIALS=6`` on a heavily
loaded machine (load 11 on 2 cores, 86 s): every visible ``.ckpt`` loaded, and
2 of the 6 were killed in the middle of a write (their
``.ember-tmp-*.partial`` file was left behind, under a name no ``*.ckpt`` glob
matches, and removed at the next start).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import cli
from ember.checkpointing import CheckpointError
from ember.plugins.callbacks.model_checkpoint import ModelCheckpoint
from ember.plugins.checkpoint_io.torch_io import CheckpointLoadError, is_temp_name, temp_name
from ember.testing import quiet_trainer as ember_quiet_trainer

HERE = Path(__file__).resolve().parent
TRIALS = int(os.environ.get("EMBER_SIGKILL_TRIALS", "12"))


class Net(ember.Module):
    """Big enough (about 300k parameters, ~3.6 MB per checkpoint with Adam)
    that a random kill often lands inside a write."""

    def __init__(self, hidden: int = 512) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.body(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class OtherNet(Net):
    """Same init arguments, different layer names."""

    def __init__(self, hidden: int = 512) -> None:
        ember.Module.__init__(self)
        self.save_hyperparameters()
        self.encoder = torch.nn.Linear(64, hidden)
        self.head = torch.nn.Linear(hidden, 1)
        self.body = torch.nn.Sequential(self.encoder, self.head)


def make_loader(n: int = 256) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 64, generator=g)
    return DataLoader(TensorDataset(x, x[:, :4].sum(1, keepdim=True)), batch_size=16, shuffle=True)


def quiet_trainer(root: Path, callbacks: list[Any] | None = None, **kwargs: Any) -> ember.Trainer:
    """ember.testing's, with the Trainer's own checkpointing (these tests crash and resume)."""
    return ember_quiet_trainer(root, callbacks=callbacks or [], **{"enable_checkpointing": None, **kwargs})


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def visible_checkpoints(directory: Path) -> list[Path]:
    """What a shell's ``*.ckpt`` (or ``glob.glob``) matches: hidden files excluded."""
    return sorted(p for p in directory.glob("*.ckpt") if not p.name.startswith("."))


def temp_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if is_temp_name(p.name))


# --------------------------------------------------------------------------- SIGKILL at random moments

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    import ember
    from ember.plugins.callbacks.model_checkpoint import ModelCheckpoint
    from test_crash_safety import Net, make_loader, quiet_trainer

    out = Path(sys.argv[1])

    class SaveEveryStep(ember.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 1:  # the first step's checkpoints are written: kill from here on
                print("go", flush=True)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            trainer.save_checkpoint(out / "fixed.ckpt")

    ember.seed_everything(0)
    mc = ModelCheckpoint(dirpath=out, save_last=True, every_n_train_steps=1, save_top_k=2, monitor="train_loss")
    quiet_trainer(out, [SaveEveryStep(), mc], max_epochs=1000).fit(Net(), make_loader())
    """
)


def _kill_trial(script: Path, out: Path, delay: float) -> str:
    child = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "go", child.stderr.read()  # type: ignore[union-attr]
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:  # pragma: no cover - only if an assertion fired first
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return line


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_corrupt_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(here=str(HERE)))
    delays = [rng.uniform(0.0, 1.2) for _ in range(TRIALS)]
    dirs = [tmp_path / f"trial{trial}" for trial in range(TRIALS)]
    for out in dirs:
        out.mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:  # two children at a time: their start-up dominates
        list(pool.map(lambda i: _kill_trial(script, dirs[i], delays[i]), range(TRIALS)))
    with_checkpoint = mid_write = 0
    last_dir = None
    for out in dirs:
        found = visible_checkpoints(out)
        for path in found:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            assert isinstance(checkpoint, dict) and "state_dict" in checkpoint, path
            assert checkpoint["global_step"] >= 1
            Net.load_from_checkpoint(str(path))
        if found:
            with_checkpoint += 1
            last_dir = out
        if temp_files(out):
            mid_write += 1
            # A leftover temporary file is a partial write: never a checkpoint name, nor one a *.ckpt glob matches.
            assert all(p.suffix == ".partial" and p not in found for p in temp_files(out))
    print(f"\nSIGKILL trials: {TRIALS}, all loadable; {with_checkpoint} had a checkpoint, {mid_write} were killed mid-write")
    assert last_dir is not None, "no trial lived long enough to save a checkpoint"

    # Resume with ckpt_path="last" from the last trial's directory, with a
    # partial file planted as the newest hidden file: it must be ignored, and
    # ModelCheckpoint must neither use nor delete it (it is not of ember's
    # temporary-name pattern). Ember's own leftovers (of a dead process) are
    # removed when ModelCheckpoint starts.
    planted = last_dir / ".tmp-planted.ckpt"
    planted.write_bytes(visible_checkpoints(last_dir)[0].read_bytes()[:1000])
    future = time.time() + 60
    os.utime(planted, (future, future))
    before = snapshot(planted)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = next(iter(temp_files(last_dir)), None) or Path(temp_name(str(last_dir)).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    if not leftover.exists():
        leftover.write_bytes(b"partial")

    class FirstStep(ember.Callback):
        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.step = trainer.global_step

    first = FirstStep()
    mc = ModelCheckpoint(dirpath=last_dir, save_last=True, every_n_train_steps=1, save_top_k=2, monitor="train_loss")
    trainer = quiet_trainer(last_dir, [first, mc], max_epochs=1000)
    resumed_from = max(visible_checkpoints(last_dir), key=lambda p: p.stat().st_mtime_ns)
    saved_step = torch.load(resumed_from, weights_only=True)["global_step"]
    trainer.max_steps = saved_step + 2
    trainer.fit(Net(), make_loader(), ckpt_path="last")
    assert not Path(trainer._ckpt_path).name.startswith(".tmp-")
    assert Path(trainer._ckpt_path) == resumed_from
    assert first.step == saved_step and trainer.global_step == saved_step + 2
    assert temp_files(last_dir) == [] and not leftover.exists()
    assert snapshot(planted) == before
    assert os.path.basename(mc.last_model_path) == "last.ckpt"


# --------------------------------------------------------------------------- a write that fails midway


def _half_then_fail(real_save: Any, fail: Any) -> Any:
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if not fail():
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of ``Net(hidden=64)`` after a short fit."""
    root = tmp_path_factory.mktemp("good")
    ember.seed_everything(0)
    trainer = quiet_trainer(root, max_steps=3, enable_checkpointing=False)
    trainer.fit(Net(hidden=64), make_loader(64))
    trainer.save_checkpoint(root / "good.ckpt")
    return root / "good.ckpt"


def test_failed_write_over_an_existing_checkpoint_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.ckpt"
    ember.seed_everything(0)
    trainer = quiet_trainer(tmp_path, max_steps=2, enable_checkpointing=False)
    trainer.fit(Net(hidden=64), make_loader(64))
    trainer.save_checkpoint(path)
    before = snapshot(path)
    time.sleep(0.01)
    trainer.module.body[0].weight.data += 1  # the new state differs from the saved one
    monkeypatch.setattr(torch, "save", _half_then_fail(torch.save, lambda: True))
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(path)
    monkeypatch.undo()
    assert snapshot(path) == before
    assert temp_files(tmp_path) == []  # the partial temporary file was removed
    Net.load_from_checkpoint(str(path))


@pytest.mark.slow
def test_sigkill_inside_a_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A real crash in the middle of writing: the process writes half of the
    new checkpoint to the temporary file and is killed by SIGKILL."""
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            """
            import hashlib, io, os, signal, sys
            from pathlib import Path
            import torch
            sys.path.insert(0, {here!r})
            import ember
            from test_crash_safety import Net, make_loader, quiet_trainer

            out = Path(sys.argv[1])
            real_save = torch.save

            class SaveThenDie(ember.Callback):
                def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                    target = out / "checkpoints" / "model.ckpt"
                    if trainer.global_step == 3:
                        data = target.read_bytes()
                        print(hashlib.sha256(data).hexdigest(), target.stat().st_mtime_ns, flush=True)
                        def dying_save(obj, f, *a, **k):
                            buffer = io.BytesIO()
                            real_save(obj, buffer, *a, **k)
                            f.write(buffer.getvalue()[: buffer.tell() // 2])
                            f.flush()
                            os.fsync(f.fileno())
                            os.kill(os.getpid(), signal.SIGKILL)
                        torch.save = dying_save
                    trainer.save_checkpoint(target)

            ember.seed_everything(0)
            quiet_trainer(out, [SaveThenDie()], max_epochs=5, enable_checkpointing=False).fit(Net(hidden=64), make_loader(128))
            """
        ).format(here=str(HERE))
    )
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    digest, mtime = proc.stdout.split()
    path = tmp_path / "checkpoints" / "model.ckpt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert path.stat().st_mtime_ns == int(mtime)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    [partial] = temp_files(path.parent)  # the half-written file stays, under a name no loader picks
    assert partial.suffix == ".partial" and 0 < partial.stat().st_size < path.stat().st_size
    with pytest.raises(CheckpointLoadError, match="truncated"):
        Net.load_from_checkpoint(str(partial))
    trainer = quiet_trainer(tmp_path, max_steps=4, enable_checkpointing=False)
    trainer.fit(Net(hidden=64), make_loader(128), ckpt_path="last")  # looks in {default_root_dir}/checkpoints
    assert Path(trainer._ckpt_path) == path
    assert partial.exists()


@pytest.mark.parametrize("failing_call", [1, 2], ids=["top_k_file", "last_ckpt"])
def test_model_checkpoint_failure_mid_rotation_keeps_good_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int) -> None:
    """ModelCheckpoint saves the top-k file, then last.ckpt. A write failing
    at either point leaves every earlier file (and last.ckpt) intact."""
    calls = {"n": 0, "armed": False}
    seen: dict[str, Any] = {}

    def fail() -> bool:
        if not calls["armed"]:
            return False
        calls["n"] += 1
        return calls["n"] == failing_call

    class Arm(ember.Callback):  # user callbacks run before ModelCheckpoint
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == 3:
                seen.update({p.name: snapshot(p) for p in visible_checkpoints(tmp_path)})
                calls["armed"] = True

    monkeypatch.setattr(torch, "save", _half_then_fail(torch.save, fail))
    mc = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=1, save_last=True)
    ember.seed_everything(0)
    with pytest.raises(OSError, match="No space left"):
        quiet_trainer(tmp_path, [Arm(), mc], max_epochs=3).fit(Net(hidden=64), make_loader(128))
    monkeypatch.undo()
    assert "last.ckpt" in seen and len(seen) == 2
    assert snapshot(tmp_path / "last.ckpt") == seen["last.ckpt"]
    if failing_call == 1:  # nothing new was written, nothing was deleted
        assert {p.name: snapshot(p) for p in visible_checkpoints(tmp_path)} == seen
    assert temp_files(tmp_path) == []
    for path in visible_checkpoints(tmp_path):
        Net.load_from_checkpoint(str(path))


# --------------------------------------------------------------------------- bad files are refused, and left alone


def _truncated(good: Path, path: Path) -> None:
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def _text(good: Path, path: Path) -> None:
    path.write_text("epoch=3 step=120\n")


def _list(good: Path, path: Path) -> None:
    torch.save([torch.zeros(3), torch.ones(3)], path)


def _no_state_dict(good: Path, path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(3)}}, path)


def _future_version(good: Path, path: Path) -> None:
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["ember_version"] = "99.0.0"
    torch.save(checkpoint, path)


BAD_FILES = {
    "truncated": (_truncated, ["truncated", "earlier checkpoint"]),
    "text": (_text, ["not a checkpoint", "trainer.save_checkpoint or ModelCheckpoint"]),
    "list": (_list, ["holds a list, not an ember checkpoint"]),
    "no_state_dict": (_no_state_dict, ["is not an ember checkpoint", "'state_dict'", "trainer.save_checkpoint or ModelCheckpoint"]),
    "future_version": (_future_version, ["99.0.0", "cannot restore", "Install a matching ember"]),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_are_refused_with_a_fix_and_left_unchanged(kind: str, good: Path, tmp_path: Path) -> None:
    make, parts = BAD_FILES[kind]
    path = tmp_path / f"{kind}.ckpt"
    make(good, path)
    before = snapshot(path)
    with pytest.raises((CheckpointLoadError, CheckpointError)) as fit_error:
        quiet_trainer(tmp_path, max_steps=1).fit(Net(hidden=64), make_loader(64), ckpt_path=str(path))
    with pytest.raises((CheckpointLoadError, CheckpointError)) as load_error:
        Net.load_from_checkpoint(str(path))
    for error in (fit_error.value, load_error.value):
        message = str(error)
        assert str(path) in message
        for part in parts:
            assert part in message, message
    assert snapshot(path) == before


def test_checkpoint_of_a_different_architecture(good: Path, tmp_path: Path) -> None:
    before = snapshot(good)
    with pytest.raises(CheckpointError) as fit_error:
        quiet_trainer(tmp_path, max_steps=1).fit(OtherNet(hidden=64), make_loader(64), ckpt_path=str(good))
    with pytest.raises(CheckpointError) as load_error:
        OtherNet.load_from_checkpoint(str(good))
    for error in (fit_error.value, load_error.value):
        message = str(error)
        assert str(good) in message and "OtherNet" in message
        assert "missing keys: encoder.weight" in message
        assert "unexpected keys: body.0.weight" in message or "unexpected keys: body.2.weight" in message
        assert "different model" in message
    assert snapshot(good) == before


def test_checkpoint_with_other_shapes(good: Path, tmp_path: Path) -> None:
    before = snapshot(good)
    with pytest.raises(CheckpointError) as fit_error:
        quiet_trainer(tmp_path, max_steps=1).fit(Net(hidden=32), make_loader(64), ckpt_path=str(good))
    with pytest.raises(CheckpointError) as load_error:
        Net.load_from_checkpoint(str(good), hidden=32)
    for error in (fit_error.value, load_error.value):
        message = str(error)
        assert str(good) in message
        assert "shape mismatches: body.0.weight: checkpoint (64, 64) vs module (32, 64)" in message
        assert "init arguments" in message  # the suggested fix
    assert snapshot(good) == before


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_everywhere(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["hyper_parameters"] = {"hidden": _Payload(marker)}
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)  # plain torch.save pickles the payload
    before = snapshot(path)

    with pytest.raises(CheckpointLoadError, match="Refused to load") as fit_error:
        quiet_trainer(tmp_path, max_steps=1).fit(Net(hidden=64), make_loader(64), ckpt_path=str(path))
    assert str(path) in str(fit_error.value)
    with pytest.raises(CheckpointLoadError, match="Refused to load") as load_error:
        Net.load_from_checkpoint(str(path))
    assert str(path) in str(load_error.value)
    assert cli.main(["checkpoint", "inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Refused to load") and str(path) in err

    assert not marker.exists()
    assert snapshot(path) == before
    # The payload is real: an unrestricted load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()
