"""The medical example (examples/medical) trains through the ``ember`` command on
its synthetic MedMNIST stand-in, well above chance, logs to CSV, writes a
checkpoint that loads with ``torch.load(weights_only=True)``, tests it with
``ember test --ckpt_path`` and exports it with ``ember export``.

The end-to-end test runs the real thing (``ember fit`` in a subprocess, on a
copy of the example) with ``source = "synthetic"``, so it never touches the
network and does not depend on what is in ``~/.medmnist``. MONAI is used when
it is installed and replaced by torch code when it is not; both work.
"""

from __future__ import annotations

import csv
import importlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "medical"
TARGET_ACC = 0.90  # 8 classes: chance is 0.125


def ember_command() -> list[str]:
    """The ``ember`` console script of the running interpreter's environment."""
    scripts = Path(sys.executable).parent
    for name in ("ember", "ember.exe"):
        if (scripts / name).exists():
            return [str(scripts / name)]
    found = shutil.which("ember")
    if found is None:
        pytest.fail("the `ember` command is not installed; run `python -m pip install -e .`")
    return [found]


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Only ember's built-in plugins, and no stray stack overrides.
    env["EMBER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.pop("EMBER_PLUGINS", None)
    env.pop("EMBER_DISABLE_PLUGINS", None)
    env = {k: v for k, v in env.items() if not (k.startswith("EMBER_") and "__" in k)}
    env["MEDMNIST_ROOT"] = str(tmp_path / "medmnist")  # empty: nothing real is picked up
    return env


def run_ember(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*ember_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, f"`ember {' '.join(args)}` exited with {proc.returncode}\n{output}"
    return proc


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, "")]


@pytest.fixture()
def example_modules(monkeypatch: pytest.MonkeyPatch):
    """``data`` and ``model`` of the example, imported from its folder."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("data", "model"):
        sys.modules.pop(name, None)
    data = importlib.import_module("data")
    model = importlib.import_module("model")
    yield data, model
    for name in ("data", "model"):
        sys.modules.pop(name, None)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_medical_fit_test_export_through_the_cli(tmp_path: Path) -> None:
    workdir = tmp_path / "medical"
    shutil.copytree(EXAMPLE, workdir, ignore=shutil.ignore_patterns("__pycache__", "ember_logs", "checkpoints", "*.ckpt"))
    run_root = tmp_path / "run"
    env = clean_env(tmp_path)

    start = time.perf_counter()
    proc = run_ember(
        [
            "fit",
            "--trainer.default_root_dir",
            str(run_root),
            "--loggers.0.init_args.save_dir",
            str(run_root),  # the stack's explicit CSV logger
            "--trainer.enable_progress_bar",
            "false",
            "--data.init_args.source",
            "synthetic",
        ],
        cwd=workdir,
        env=env,
    )
    fit_seconds = time.perf_counter() - start
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "synthetic stand-in" in proc.stderr, output
    assert "val_auroc" in proc.stdout, output  # the CLI prints the final metrics

    metrics_csv = run_root / "ember_logs" / "version_0" / "metrics.csv"
    assert metrics_csv.is_file(), f"no {metrics_csv}\n{output}"
    rows = read_metrics(metrics_csv)
    val_acc, val_auroc = column(rows, "val_acc"), column(rows, "val_auroc")
    assert val_acc and val_auroc, f"{metrics_csv} lacks val_acc / val_auroc: {list(rows[0])}"
    assert max(val_acc) >= TARGET_ACC, f"best val_acc {max(val_acc):.4f} < {TARGET_ACC} (all: {val_acc})"
    assert max(val_auroc) >= 0.98, f"best val_auroc {max(val_auroc):.4f} (all: {val_auroc})"
    for name in ("train_loss", "train_acc", "train_auroc", "val_loss"):
        assert column(rows, name), f"{name} was never logged"

    checkpoints = sorted((run_root / "ember_logs" / "version_0" / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 1, f"expected the one best checkpoint, found {checkpoints}\n{output}"
    ckpt_path = checkpoints[0]
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert any(key.endswith("features.0.0.weight") for key in ckpt["state_dict"]), sorted(ckpt["state_dict"])[:5]

    # `ember test` on that checkpoint.
    proc = run_ember(
        [
            "test",
            "--ckpt_path",
            str(ckpt_path),
            "--trainer.default_root_dir",
            str(run_root),
            "--loggers.0.init_args.save_dir",
            str(run_root),
            "--trainer.enable_progress_bar",
            "false",
            "--data.init_args.source",
            "synthetic",
        ],
        cwd=workdir,
        env=env,
    )
    test_acc = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("test_acc ")]
    assert test_acc and float(test_acc[0]) >= TARGET_ACC - 0.05, proc.stdout

    # `ember export` (when this ember has it) to a torch.export program.
    export_help = subprocess.run([*ember_command(), "export", "--help"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    if export_help.returncode == 0:
        exported = tmp_path / "medical_cnn.pt2"
        run_ember(["export", str(ckpt_path), "--format", "torch_export", "--output", str(exported), "--check"], cwd=workdir, env=env)
        program = torch.export.load(str(exported))
        probs = program.module()(torch.rand(4, 3, 28, 28)).softmax(dim=1)
        assert probs.shape == (4, 8)

    print(f"ember fit took {fit_seconds:.1f} s; best val_acc {max(val_acc):.4f}, best val_auroc {max(val_auroc):.4f}")


# --------------------------------------------------------------------------- pieces


def test_auroc_matches_scikit_learn(example_modules) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    _, model = example_modules
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (300,), generator=g)
    logits = torch.randn(300, 5, generator=g) + 1.5 * torch.nn.functional.one_hot(target, 5)
    probs = logits.softmax(dim=1)
    probs = (probs * 20).round() / 20  # ties
    probs = probs / probs.sum(dim=1, keepdim=True)
    expected = metrics.roc_auc_score(target.numpy(), probs.numpy(), multi_class="ovr", average="macro")
    assert float(model.multiclass_auroc(probs, target)) == pytest.approx(expected, abs=1e-6)

    binary_target = target > 2
    expected = metrics.roc_auc_score(binary_target.numpy(), probs[:, 0].numpy())
    assert float(model.binary_auroc(probs[:, 0], binary_target)) == pytest.approx(expected, abs=1e-6)
    # Two classes: the average of both one-vs-rest areas is the binary AUROC.
    two = torch.randn(300, 2, generator=g).softmax(dim=1)
    expected = metrics.roc_auc_score(binary_target.numpy(), two[:, 1].numpy())
    assert float(model.multiclass_auroc(two, binary_target.long())) == pytest.approx(expected, abs=1e-5)


def test_auroc_edge_cases(example_modules) -> None:
    _, model = example_modules
    y = torch.tensor([0, 0, 1, 1])
    assert float(model.multiclass_auroc(torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]), y)) == 1.0
    assert float(model.multiclass_auroc(torch.full((4, 2), 0.5), y)) == 0.5  # all tied
    # A class absent from the targets is left out of the average.
    three = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    assert float(model.multiclass_auroc(three, y)) == 1.0


def test_synthetic_data_is_deterministic_and_shaped_like_medmnist(example_modules) -> None:
    data, _ = example_modules
    images, labels = data.synthetic_medmnist(64, 3, 8, seed=5)
    assert images.shape == (64, 28, 28, 3) and images.dtype == np.uint8
    assert labels.shape == (64, 1) and set(np.unique(labels)) == set(range(8))
    again, _ = data.synthetic_medmnist(64, 3, 8, seed=5)
    assert np.array_equal(images, again)
    grey, grey_labels = data.synthetic_medmnist(10, 1, 2, seed=0)
    assert grey.shape == (10, 28, 28) and set(np.unique(grey_labels)) == {0, 1}


@pytest.mark.slow
def test_missing_medmnist_falls_back_to_synthetic_with_a_warning(example_modules, tmp_path: Path, caplog) -> None:
    data, _ = example_modules
    dm = data.MedMNISTDataModule(root=str(tmp_path), download=False, synthetic_sizes=[32, 16, 16], batch_size=8)
    with caplog.at_level(logging.WARNING, logger="ember.examples.medical"):
        logging.getLogger("ember.examples.medical").propagate = True
        dm.prepare_data()
        dm.setup("fit")
    assert dm.data_source == "synthetic"
    assert "MedMNIST not available offline: using the synthetic stand-in" in caplog.text
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -0.3 <= float(x.min()) and float(x.max()) <= 1.3  # scaled to [0, 1], plus a little noise

    with pytest.raises(FileNotFoundError, match="not available"):
        data.MedMNISTDataModule(root=str(tmp_path), source="medmnist", download=False).setup("fit")


def test_a_present_npz_is_used(example_modules, tmp_path: Path) -> None:
    data, _ = example_modules
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        images, labels = data.synthetic_medmnist(n, 1, 2, seed=n)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    dm = data.MedMNISTDataModule(flag="pneumoniamnist", root=str(tmp_path), batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_source == "medmnist"
    assert len(dm.train_set) == 12 and len(dm.val_set) == 6
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (6, 1, 28, 28)


def test_download_gives_up_quickly(example_modules, tmp_path: Path) -> None:
    data, _ = example_modules
    target = tmp_path / "x.npz"
    start = time.perf_counter()
    # Nothing listens on port 9 of localhost: the attempt fails (or times out) at once.
    error = data.try_download("http://127.0.0.1:9/x.npz", target, md5=None, timeout=3.0)
    assert error is not None and time.perf_counter() - start < 5
    assert not target.exists() and not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize("use_monai", [False, True])
def test_transforms_with_and_without_monai(example_modules, use_monai: bool) -> None:
    data, _ = example_modules
    if use_monai:
        pytest.importorskip("monai")
    image = torch.from_numpy(data.synthetic_medmnist(1, 3, 8, seed=0)[0][0]).permute(2, 0, 1).contiguous()
    train_tf, backend = data.make_transforms(True, seed=0, use_monai=use_monai)
    eval_tf, _ = data.make_transforms(False, seed=0, use_monai=use_monai)
    assert backend == ("monai" if use_monai else "torch")
    out = eval_tf(image)
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 28, 28)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert train_tf(image).shape == (3, 28, 28)
    reference, _ = data.make_transforms(False, seed=0, use_monai=False)
    assert torch.allclose(out, reference(image), atol=1e-6)  # same scaling either way


def test_model_predicts_probabilities(example_modules) -> None:
    _, model = example_modules
    net = model.MedicalCNN(in_channels=1, num_classes=2).eval()
    assert net.example_input_array.shape == (1, 1, 28, 28)
    assert dict(net.hparams)["num_classes"] == 2
    probs = net.predict_step((torch.rand(5, 1, 28, 28), torch.zeros(5, dtype=torch.long)), 0)
    assert probs.shape == (5, 2) and torch.allclose(probs.sum(dim=1), torch.ones(5))
