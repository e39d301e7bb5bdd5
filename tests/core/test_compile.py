"""``trainer.fit(torch.compile(module))`` and the ``Compile`` callback.

Real fits through dynamo. The fast tests compile with a recording backend
(``gm.forward`` as the compiled function: dynamo really captures the graphs,
guards and recompiles, but no C++ is built) or ``aot_eager`` (AOT autograd's
forward/backward split, still no codegen), so the graph capture is proven
without inductor's minutes of compiling on a CPU runner; the one inductor
test is marked slow. Weights are compared against the same fit in eager mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo

import ember
from ember.compile import COMPILED_PREFIX, CompileStats, accept, is_compiled_module, strip_compiled_prefix
from ember.plugins.callbacks.compile import Compile

H: Any = None  # the ``h`` helpers of tests/core/conftest.py


@pytest.fixture(autouse=True)
def _helpers(h: Any) -> None:
    global H
    H = h


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


class Recording:
    """A dynamo backend that runs the captured graph as it is and records it."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        self.graphs.append(gm)
        return gm.forward


def _fit(tmp_path: Any, model: Any, epochs: int = 1, n: int = 24, ckpt_path: str | None = None, **kwargs: Any) -> ember.Trainer:
    trainer = H.quiet_trainer(tmp_path, max_epochs=epochs, **kwargs)
    trainer.fit(model, H.loader(n, batch_size=8), H.loader(16, batch_size=8, seed=1), ckpt_path=ckpt_path)
    return trainer


def _close(a: list[torch.Tensor], b: list[torch.Tensor], **tol: Any) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, **tol) for x, y in zip(a, b, strict=True))


def test_fit_trains_through_the_compiled_module(tmp_path: Any) -> None:
    eager = H.Regressor()
    _fit(tmp_path / "e", eager)
    backend = Recording()
    model = H.Regressor()
    compiled = torch.compile(model, backend=backend)
    trainer = _fit(tmp_path / "c", compiled)
    assert backend.graphs, "the forward never went through dynamo"
    assert trainer.module is model  # the trainer holds the module itself
    assert trainer.global_step == 3 and "val_loss" in trainer.callback_metrics
    assert _close(H.params_of(model), H.params_of(eager), atol=1e-6)
    assert _close(H.params_of(compiled), H.params_of(eager), atol=1e-6)  # the user's handle sees the same parameters


def test_compiled_checkpoint_has_original_names_and_resumes_either_way(tmp_path: Any) -> None:
    reference = H.Regressor()
    _fit(tmp_path / "ref", reference, epochs=2)

    first = H.Regressor()
    trainer = _fit(tmp_path / "a", torch.compile(first, backend="aot_eager"))
    path = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert sorted(state) == sorted(H.Regressor().state_dict())
    assert not any(COMPILED_PREFIX in k for k in state)

    plain = H.Regressor()
    _fit(tmp_path / "b", plain, epochs=2, ckpt_path=str(path))
    assert _close(H.params_of(plain), H.params_of(reference), atol=1e-6)

    backend = Recording()
    again = H.Regressor()
    _fit(tmp_path / "c", torch.compile(again, backend=backend), epochs=2, ckpt_path=str(path))
    assert backend.graphs
    assert _close(H.params_of(again), H.params_of(reference), atol=1e-6)

    loaded = H.Regressor.load_from_checkpoint(str(path))  # and the classmethod path
    assert _close(H.params_of(loaded), H.params_of(first))


def test_accumulation_and_bf16_precision_through_the_compiled_module(tmp_path: Any) -> None:
    opts = dict(accumulate_grad_batches=2, precision="bf16-mixed")
    eager = H.Regressor()
    _fit(tmp_path / "e", eager, n=40, **opts)
    model = H.Regressor()
    trainer = _fit(tmp_path / "c", torch.compile(model, backend="aot_eager"), n=40, **opts)
    assert trainer.global_step == 3  # 5 batches, windows of 2: 2 + 2 + the last one
    assert _close(H.params_of(model), H.params_of(eager), atol=1e-2, rtol=1e-2)
    assert not _close(H.params_of(model), H.params_of(H.Regressor()))  # it did train


def test_validate_and_predict_accept_a_compiled_module(tmp_path: Any) -> None:
    backend = Recording()
    compiled = torch.compile(H.Regressor(), backend=backend)
    trainer = H.quiet_trainer(tmp_path)
    (metrics,) = trainer.validate(compiled, H.loader(16), verbose=False)
    predictions = trainer.predict(compiled, H.loader(16))
    assert "val_loss" in metrics and len(predictions) == 2 and backend.graphs


def test_a_compiled_plain_torch_module_is_refused_by_name(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match=r"torch.compile\(\) of a Linear, which is not an ember.Module"):
        H.quiet_trainer(tmp_path).fit(torch.compile(torch.nn.Linear(4, 1), backend="eager"), H.loader())


def test_helpers() -> None:
    model = H.Regressor()
    compiled = torch.compile(model, backend="eager")
    assert is_compiled_module(compiled) and not is_compiled_module(model)
    assert accept(model) is model
    assert set(strip_compiled_prefix(compiled.state_dict())) == set(model.state_dict())


def test_compile_callback_compiles_reports_and_restores(tmp_path: Any, capsys: Any) -> None:
    class _Breaks(H.Regressor):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.layer(x)
            torch._dynamo.graph_break()
            return out * 1.0

    backend = Recording()
    callback = Compile(backend=backend, dynamic=False)
    model = _Breaks()
    # 20 samples in batches of 8: the short last batch fails a shape guard -> a recompilation.
    trainer = H.quiet_trainer(tmp_path, max_epochs=1, callbacks=[callback])
    trainer.fit(model, H.loader(20, batch_size=8))
    stats = callback.stats
    assert isinstance(stats, CompileStats) and backend.graphs
    assert stats.frames >= 2 and stats.recompilations >= 1 and stats.graph_breaks >= 1
    assert any("size" in r or "mismatch" in r or "guard" in r.lower() for r in stats.recompile_reasons), stats.recompile_reasons
    assert stats.wall_time_s > 0 and stats.compile_time_s > 0
    out = capsys.readouterr().out
    assert "Compile (fit):" in out and "recompilation" in out and "graph break" in out
    assert model._compiled_call_impl is None  # the plain call is back after the run
    assert not any(COMPILED_PREFIX in k for k in model.state_dict())


def test_compile_callback_by_name(tmp_path: Any) -> None:
    """``[[callbacks]] name = "compile"`` resolves through the role registry a stack uses."""
    from ember.plugin_manager import default_plugin_manager

    callback = default_plugin_manager().build_registry().create("callback", "compile", backend="eager", verbose=False)
    assert isinstance(callback, Compile)
    H.quiet_trainer(tmp_path, max_epochs=1, callbacks=[callback]).fit(H.Regressor(), H.loader(16))
    assert callback.stats is not None and callback.stats.frames >= 1


def test_compile_options_are_checked() -> None:
    with pytest.raises(ValueError, match="one or the other"):
        Compile(mode="max-autotune", options={"triton.cudagraphs": False})


class _SaveAtEpochEnd(ember.Callback):
    def __init__(self, path: Any) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


@pytest.mark.slow
def test_inductor_digits_cnn_trains_and_resumes(tmp_path: Any) -> None:
    """The real compiler (C++ codegen on CPU) on the example CNN: two epochs
    compiled match two eager ones, and the first epoch's checkpoint resumes
    into a fresh compiled module to the same weights."""
    import sys

    sys.path.insert(0, "examples/digits")
    try:
        from model import DigitsCNN
    finally:
        sys.path.pop(0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)

    class SGDDigits(DigitsCNN):
        # SGD, not the example's AdamW: Adam's first steps turn the last-bit
        # differences of inductor's kernels in near-zero gradients into
        # lr-sized ones, which would hide a real difference in noise.
        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    def fresh() -> Any:
        torch.manual_seed(0)
        return SGDDigits(dropout=0.0)

    eager = fresh()
    H.quiet_trainer(tmp_path / "e", max_epochs=2).fit(eager, data)
    model = fresh()
    path = tmp_path / "one.ckpt"
    H.quiet_trainer(tmp_path / "c", max_epochs=2, callbacks=[_SaveAtEpochEnd(path)]).fit(torch.compile(model), data)
    assert _close(H.params_of(model), H.params_of(eager), atol=1e-4, rtol=1e-4)
    assert not any(COMPILED_PREFIX in k for k in torch.load(path, weights_only=True)["state_dict"])
    resumed = fresh()
    H.quiet_trainer(tmp_path / "r", max_epochs=2).fit(torch.compile(resumed), data, ckpt_path=str(path))
    assert _close(H.params_of(resumed), H.params_of(model), atol=1e-4, rtol=1e-4)
