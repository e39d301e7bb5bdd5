"""``ember plot``: real runs written by the CSV logger, drawn to a PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.cli import main
from ember.plugins.loggers import CSVLogger

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Regressor(ember.Module):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.lr = lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader(seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real runs, ``ember_logs/version_0`` and ``version_1``."""
    root = tmp_path_factory.mktemp("plot-runs")
    for lr in (0.01, 0.1):
        trainer = ember.Trainer(
            max_epochs=3,
            log_every_n_steps=1,
            logger=CSVLogger(root),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            default_root_dir=root,
        )
        trainer.fit(Regressor(lr), loader(0), loader(1))
    assert (root / "ember_logs" / "version_1" / "metrics.csv").is_file()
    return root


def png_size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    return image.shape[1], image.shape[0]


def test_two_runs_to_png(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curves.png"
    logs = runs / "ember_logs"
    assert main(["plot", str(logs / "version_0"), str(logs / "version_1"), "--metrics", "loss,val_loss", "--output", str(out)]) == 0
    assert out.stat().st_size > 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    width, height = png_size(out)
    assert (width, height) == (1000, 360)  # two subplots side by side at 5 x 3.6 in, 100 dpi
    printed = capsys.readouterr().out
    assert "2 metrics (loss, val_loss) from 2 runs" in printed


def test_parent_directory_finds_every_run_and_every_metric(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ember.commands import plot

    loaded = plot.load_runs([str(runs / "ember_logs")])
    assert [r.label for r in loaded] == ["version_0", "version_1"]
    xs, ys = loaded[0].series["loss"]
    assert xs == sorted(xs) and len(xs) == 12  # 4 steps x 3 epochs, logged every step
    assert len(loaded[0].series["val_loss"][0]) == 3  # one per epoch; the empty cells of other rows are skipped
    assert plot.choose_metrics(loaded, None) == ["loss", "val_loss"]  # 'epoch' is not a curve

    out = tmp_path / "all.png"
    assert main(["plot", str(runs), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE and png_size(out)[0] > 0


def test_a_metrics_file_can_be_given_directly(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.png"
    assert main(["plot", str(runs / "ember_logs" / "version_0" / "metrics.csv"), "--metrics", "val_loss", "-o", str(out)]) == 0
    assert png_size(out) == (500, 360)


def test_no_metrics_file_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no metrics.csv found under" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "x.png").exists()
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_unknown_metric_lists_available_and_suggests(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(runs), "--metrics", "loss,val_los", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'val_los' (did you mean 'val_loss'?)" in err
    assert "Available: loss, val_loss" in err
    assert not (tmp_path / "x.png").exists()


def test_not_a_metrics_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "metrics.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["plot", str(bad)]) == 2
    assert "has no 'step' column" in capsys.readouterr().err


def test_plot_takes_no_stack_overrides(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(runs), "--trainer.max_epochs", "3"]) == 2
    assert "takes no stack overrides" in capsys.readouterr().err


def test_missing_matplotlib_is_explained(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert main(["plot", str(runs), "-o", str(tmp_path / "x.png")]) == 2
    assert "pip install 'ember[plot]'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["plot", "--help"]])
def test_help_imports_neither_torch_nor_matplotlib(argv: list[str]) -> None:
    code = (
        "import sys\nfrom ember.cli import main\n"
        f"rc = main({argv!r})\n"
        "heavy = sorted(m for m in ('torch', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', heavy)\nsys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "plot" in result.stdout


def test_without_output_the_png_goes_next_to_the_runs(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    logs = runs / "ember_logs"
    assert main(["plot", str(logs / "version_0")]) == 0
    assert (logs / "version_0" / "plot.png").read_bytes()[:8] == PNG_SIGNATURE
    assert main(["plot", str(logs)]) == 0  # several runs: the directory that holds them all
    assert (logs / "plot.png").read_bytes()[:8] == PNG_SIGNATURE
    assert list(elsewhere.iterdir()) == []  # nothing written into the working directory
    assert f"wrote {logs / 'version_0' / 'plot.png'}" in capsys.readouterr().out
