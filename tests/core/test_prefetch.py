"""The device-side input pipeline (``ember.loops.prefetch``).

On CPU the prefetcher is off by default; these tests turn it on
(``trainer.device_prefetch``) to check that it changes nothing a run can
see: batch order, the short last batch, the resume position, and that every
batch goes through the strategy's ``batch_to_device`` and the module's
transfer hooks exactly once. The ``gpu`` tests repeat the fit on CUDA, where
it is on by default and copies on a side stream.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import ember
from ember.loops.prefetch import DevicePrefetcher, resolve_depth

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class _Source:
    """An iterator that records how many items were taken from it."""

    def __init__(self, n: int) -> None:
        self.items = iter(range(n))
        self.taken = 0

    def __iter__(self) -> _Source:
        return self

    def __next__(self) -> int:
        item = next(self.items)
        self.taken += 1
        return item


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_order_last_item_and_lookahead(depth: int) -> None:
    source = _Source(7)
    moved: list[int] = []
    prefetcher = DevicePrefetcher(source, lambda b: moved.append(b) or b * 10, torch.device("cpu"), depth=depth)
    out = []
    for item in prefetcher:
        out.append(item)
        # while the loop holds item k, at most `depth` more have been taken
        assert source.taken == min(len(out) + depth, 7)
    assert out == [i * 10 for i in range(7)] and moved == list(range(7))
    with pytest.raises(StopIteration):
        next(prefetcher)


def test_depth_setting() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    plain, workers = DataLoader(range(4)), DataLoader(range(4), num_workers=2)
    assert resolve_depth(None, cpu, plain) is None and resolve_depth(False, cuda, plain) is None
    assert resolve_depth(None, cuda, plain) == 0 and resolve_depth(None, cuda, workers) == 1
    assert resolve_depth(True, cpu, workers) == 1 and resolve_depth(3, cpu, plain) == 3
    with pytest.raises(ValueError, match="device_prefetch"):
        resolve_depth(-1, cpu, plain)
    with pytest.raises(ValueError, match="depth"):
        DevicePrefetcher(iter([]), lambda b: b, cpu, depth=-1)


def _spy_transfers(trainer: Any) -> list[torch.Tensor]:
    """Record every batch the strategy's real batch_to_device receives."""
    seen: list[torch.Tensor] = []
    real = trainer.strategy.batch_to_device

    def recording(batch: Any) -> Any:
        seen.append(batch[0].detach().clone())
        return real(batch)

    trainer.strategy.batch_to_device = recording
    return seen


def _epochs(h: Any, tmp_path: Any, prefetch: Any, **kwargs: Any) -> tuple[Any, Any, list[torch.Tensor]]:
    model = h.TrainOnly()
    trainer = h.quiet_trainer(tmp_path, **kwargs)
    trainer.device_prefetch = prefetch
    seen = _spy_transfers(trainer)
    return model, trainer, seen


def test_fit_with_prefetch_sees_the_same_batches(h: Any, tmp_path: Any) -> None:
    plain, trainer, _ = _epochs(h, tmp_path / "a", False, max_epochs=2)
    trainer.fit(plain, h.loader(20, batch_size=8, shuffle=True))
    model, trainer, transferred = _epochs(h, tmp_path / "b", 2, max_epochs=2)
    trainer.fit(model, h.loader(20, batch_size=8, shuffle=True))
    assert len(model.train_batches) == 6 and model.train_batches[2].shape[0] == 4  # the short last batch
    assert h.same(model.train_batches, plain.train_batches)
    assert h.same(transferred, model.train_batches)  # each batch through batch_to_device once, in order
    assert h.same(h.params_of(model), h.params_of(plain))


def test_transfer_hooks_still_fire_once_per_batch(h: Any, tmp_path: Any) -> None:
    class Hooked(h.TrainOnly):
        def __init__(self) -> None:
            super().__init__()
            self.before: list[int] = []
            self.after: list[int] = []

        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            self.before.append(len(batch[0]))
            return batch

        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            self.after.append(len(batch[0]))
            return batch

    if not hasattr(h.TrainOnly, "on_before_batch_transfer"):
        pytest.skip("this ember has no batch transfer hooks")
    model = Hooked()
    trainer = h.quiet_trainer(tmp_path, max_epochs=1)
    trainer.device_prefetch = 1
    trainer.fit(model, h.loader(20, batch_size=8))
    assert model.before == model.after == [8, 8, 4]


class _SaveAt(ember.Callback):
    def __init__(self, batch_idx: int, path: Any) -> None:
        self.batch_idx, self.path = batch_idx, path

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch_idx:
            trainer.save_checkpoint(self.path)


def test_resume_position_with_prefetch(h: Any, tmp_path: Any) -> None:
    """A checkpoint written after 4 of 6 batches (a fifth already fetched
    ahead) resumes at the fifth: the rest of the run is the uninterrupted one."""
    data = lambda: h.loader(48, batch_size=8, shuffle=True)  # noqa: E731
    path = tmp_path / "mid.ckpt"
    full, trainer, _ = _epochs(h, tmp_path / "full", 2, max_epochs=2, callbacks=[_SaveAt(3, path)])
    trainer.fit(full, data())

    rest, trainer, transferred = _epochs(h, tmp_path / "rest", 2, max_epochs=2)
    trainer.fit(rest, data(), ckpt_path=str(path))
    assert len(full.train_batches) == 12 and len(rest.train_batches) == 8
    assert h.same(rest.train_batches, full.train_batches[4:])
    assert h.same(transferred, rest.train_batches)
    assert h.same(h.params_of(rest), h.params_of(full))


@pytest.mark.gpu
@needs_cuda
def test_cuda_fit_prefetches_by_default_and_matches_no_prefetch(h: Any, tmp_path: Any) -> None:
    def run(prefetch: Any) -> tuple[Any, list[torch.Tensor]]:
        model = h.TrainOnly()
        trainer = h.quiet_trainer(tmp_path, max_epochs=2, accelerator="cuda")
        if prefetch is not None:
            trainer.device_prefetch = prefetch
        seen: list[torch.Tensor] = []
        real = trainer.strategy.batch_to_device

        def recording(batch: Any) -> Any:
            moved = real(batch)
            seen.append(moved[0])
            return moved

        trainer.strategy.batch_to_device = recording
        trainer.fit(model, h.loader(40, batch_size=8, shuffle=True))
        return model, seen

    default, moved = run(None)
    off, _ = run(False)
    deep, _ = run(3)
    assert all(t.is_cuda for t in moved) and len(moved) == 10
    for other in (off, deep):
        assert len(other.train_batches) == len(default.train_batches) == 10
        assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(other.train_batches, default.train_batches, strict=True))
        assert all(torch.allclose(a, b) for a, b in zip(h.params_of(other), h.params_of(default), strict=True))


@pytest.mark.gpu
@needs_cuda
def test_cuda_prefetcher_uses_a_side_stream_and_pinned_memory() -> None:
    device = torch.device("cuda", 0)
    batches = [(torch.full((1024,), float(i)), torch.tensor([i])) for i in range(5)]
    pinned: list[bool] = []

    def to_device(batch: Any) -> Any:
        pinned.append(batch[0].is_pinned())
        assert torch.cuda.current_stream(device) != torch.cuda.default_stream(device)  # copying on the side stream
        return tuple(t.to(device, non_blocking=True) for t in batch)

    prefetcher = DevicePrefetcher(iter(batches), to_device, device, depth=2)
    out = [(x.sum().item(), y.item()) for x, y in prefetcher]
    assert out == [(1024.0 * i, i) for i in range(5)] and all(pinned)
