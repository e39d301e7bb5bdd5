"""MedMNIST 2D (28x28) as an ember DataModule, with an offline synthetic stand-in.

Where the data comes from, in order:

1. ``{root}/{flag}.npz`` when it exists, where ``root`` is the ``root``
   argument, else ``$MEDMNIST_ROOT``, else ``~/.medmnist`` (the ``medmnist``
   package's default folder);
2. a single download attempt of that file from MedMNIST's Zenodo record,
   bounded by ``download_timeout`` seconds in total and checked against the
   published MD5 (``download = false`` skips it);
3. otherwise a **synthetic data set of the same shape**: the same number of
   channels, classes and image size as ``flag``, with class-dependent shapes
   and textures under noise, generated deterministically from ``data_seed``.
   A warning says so when the data module is set up.

``source = "medmnist"`` makes a missing file an error instead of falling back;
``source = "synthetic"`` never looks for the file.

Images are ``uint8`` in storage (as in MedMNIST's ``.npz`` files) and come
out of the dataloaders as ``(N, C, 28, 28)`` float tensors scaled to
``[0, 1]`` per image, with ``int64`` labels. Training images are augmented
with random 90-degree rotations, flips and a little Gaussian noise; MONAI's
transforms do this when MONAI is installed, equivalent torch code otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import ember

log = logging.getLogger("ember.examples.medical")


def _show_log_messages() -> None:
    """Print this example's log messages to stderr unless logging is configured already."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[medical] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


#: What the example needs to know about the 28x28 MedMNIST 2D sets it supports
#: (``medmnist.INFO`` has the same facts; this copy spares the example the
#: ``medmnist`` package and its torchvision dependency).
DATASETS: dict[str, dict[str, Any]] = {
    "bloodmnist": {
        "n_channels": 3,
        "labels": [
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ],
        "md5": "7053d0359d879ad8a5505303e11de1dc",
    },
    "pneumoniamnist": {
        "n_channels": 1,
        "labels": ["normal", "pneumonia"],
        "md5": "28209eda62fecd6e6a2d98b1501bb15f",
    },
}
ZENODO_URL = "https://zenodo.org/records/10519652/files/{flag}.npz?download=1"
IMAGE_SIZE = 28
SOURCES = ("auto", "medmnist", "synthetic")


def default_root() -> Path:
    """``$MEDMNIST_ROOT`` if set, else ``~/.medmnist``."""
    env = os.environ.get("MEDMNIST_ROOT")
    return Path(env).expanduser() if env else Path.home() / ".medmnist"


# --------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def try_download(url: str, target: Path, md5: str | None, timeout: float) -> str | None:
    """Download ``url`` to ``target`` once; return ``None`` on success, else why not.

    The whole attempt (name lookup included, which ``urlopen``'s own timeout
    does not cover) is bounded by ``timeout`` seconds: the transfer runs in a
    daemon thread that is told to stop and delete its partial file when time
    is up. ``target`` appears only complete and verified.
    """
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    stop = threading.Event()
    outcome: dict[str, str | None] = {"error": "timed out"}

    def fetch() -> None:
        try:
            with urllib.request.urlopen(url, timeout=max(1.0, timeout)) as response, part.open("wb") as fh:
                while not stop.is_set():
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    fh.write(chunk)
            if stop.is_set():
                return
            if md5 is not None and _md5(part) != md5:
                outcome["error"] = "the downloaded file's MD5 does not match"
                return
            outcome["error"] = None
        except Exception as exc:  # network errors of every kind: report, never raise
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if outcome["error"] is not None:
                with contextlib.suppress(OSError):
                    part.unlink()

    worker = threading.Thread(target=fetch, name=f"download {target.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        stop.set()  # the thread deletes its partial file when it notices
        return f"no answer within {timeout:g} s"
    if outcome["error"] is None:
        os.replace(part, target)
    return outcome["error"]


# --------------------------------------------------------------------------- synthetic stand-in


def synthetic_medmnist(n: int, n_channels: int, n_classes: int, seed: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images shaped like a MedMNIST split: ``uint8`` ``(n, size, size)``
    (one channel) or ``(n, size, size, 3)``, and labels ``(n, 1)``.

    Each class draws one kind of structure, at a random position, scale,
    orientation and contrast, over a smooth random background with pixel
    noise: a large disc, a ring, parallel stripes, a grid, a cluster of
    small dots, a cross, a disc with a dark core, a small bright spot (up to
    eight classes). Every kind is unchanged in distribution by 90-degree
    rotations and flips, so those augmentations keep labels valid. The
    result depends only on the arguments.
    """
    if not 1 <= n_classes <= 8:
        raise ValueError(f"the synthetic stand-in has eight kinds of structure; {n_classes} classes asked for")
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    labels = torch.arange(n) % n_classes
    labels = labels[torch.randperm(n, generator=g)]
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (size, size), centred on the image

    # Per-image geometry; each class uses what it needs.
    cy, cx = uniform(-4, 4, n, 1, 1), uniform(-4, 4, n, 1, 1)
    theta = uniform(0, math.pi, n, 1, 1)
    radius = uniform(6.5, 9.5, n, 1, 1)
    period = uniform(4.0, 6.0, n, 1, 1)
    phase = uniform(0, 2 * math.pi, n, 1, 1)
    dots = (torch.rand(n, 5, 2, generator=g) - 0.5) * 16  # centres of the dot cluster's dots

    pattern = torch.zeros(n, size, size)
    for k in range(n_classes):
        pick = labels == k
        if pick.any():
            pattern[pick] = _structure(k, yy, xx, cy[pick], cx[pick], theta[pick], radius[pick], period[pick], phase[pick], dots[pick])

    # Smooth background (a random linear ramp) and noise; contrast varies per image.
    ramp = (uniform(-1, 1, n, 1, 1) * yy + uniform(-1, 1, n, 1, 1) * xx) / size
    contrast = uniform(0.5, 1.0, n, 1, 1)
    image = 0.25 + 0.2 * ramp + contrast * 0.6 * pattern
    image = image + 0.12 * torch.randn(n, size, size, generator=g)
    if n_channels == 1:
        pixels = image
    else:
        # A random stain-like tint per image: colour carries no class information.
        tint = uniform(0.55, 1.0, n, n_channels, 1, 1)
        pixels = image.unsqueeze(1) * tint + 0.05 * torch.randn(n, n_channels, size, size, generator=g)
        pixels = pixels.permute(0, 2, 3, 1)  # HWC, as MedMNIST stores colour images
    pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.numpy(), labels.view(n, 1).numpy().astype(np.uint8)


def _structure(
    kind: int,
    yy: torch.Tensor,
    xx: torch.Tensor,
    cy: torch.Tensor,
    cx: torch.Tensor,
    theta: torch.Tensor,
    radius: torch.Tensor,
    period: torch.Tensor,
    phase: torch.Tensor,
    dots: torch.Tensor,
) -> torch.Tensor:
    """Intensity in ``[0, 1]`` of one kind of structure for a batch of images (per-image parameters ``(m, 1, 1)``)."""
    dy, dx = yy - cy, xx - cx
    dist = torch.sqrt(dy**2 + dx**2)
    along = dx * torch.cos(theta) + dy * torch.sin(theta)
    across = -dx * torch.sin(theta) + dy * torch.cos(theta)

    def disc(r: torch.Tensor) -> torch.Tensor:  # soft-edged disc of radius r
        return torch.sigmoid((r - dist) * 1.6)

    def waves(u: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.5 * torch.cos(2 * math.pi * u / period + phase)

    if kind == 0:  # large disc
        return disc(radius)
    if kind == 1:  # thin ring
        return torch.exp(-(((dist - radius) / 1.3) ** 2))
    if kind == 2:  # parallel stripes
        return waves(along)
    if kind == 3:  # grid
        return waves(along) * waves(across)
    if kind == 4:  # cluster of small dots
        d2 = (yy - dots[..., 0, None, None]) ** 2 + (xx - dots[..., 1, None, None]) ** 2
        return torch.exp(-d2 / (2 * 1.2**2)).amax(dim=1)
    if kind == 5:  # cross
        bars = torch.maximum(torch.exp(-((along / 1.6) ** 2)), torch.exp(-((across / 1.6) ** 2)))
        return bars * disc(radius + 2)
    if kind == 6:  # disc with a dark core
        return disc(radius) * (1 - 0.85 * disc(radius * 0.45))
    return disc(radius * 0.35)  # small bright spot


# --------------------------------------------------------------------------- transforms


class MonaiTransforms:
    """MONAI's transforms on plain tensors.

    MONAI wraps results in ``MetaTensor`` (tensor plus metadata such as the
    affine) while metadata tracking is on; these 28x28 images carry no
    metadata, and the tracking makes every transform several times slower,
    so the pipeline switches it off (a process-wide MONAI setting) when it
    runs.
    """

    def __init__(self, train: bool, seed: int) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            from monai.transforms import Compose, EnsureType, RandFlip, RandGaussianNoise, RandRotate90, ScaleIntensity

        steps: list[Any] = [ScaleIntensity(minv=0.0, maxv=1.0)]
        if train:
            steps += [
                RandRotate90(prob=0.5, max_k=3, spatial_axes=(0, 1)),
                RandFlip(prob=0.5, spatial_axis=0),
                RandFlip(prob=0.5, spatial_axis=1),
                RandGaussianNoise(prob=0.3, mean=0.0, std=0.03),
            ]
        steps.append(EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False))
        self.compose = Compose(steps)
        self.compose.set_random_state(seed=seed)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from monai.data import set_track_meta

        set_track_meta(False)
        return self.compose(image.float())


class TorchTransforms:
    """The same steps as the MONAI pipeline, in plain torch (used without MONAI)."""

    def __init__(self, train: bool, seed: int) -> None:
        self.train = train
        self.generator = torch.Generator().manual_seed(seed)

    def _coin(self, p: float) -> bool:
        return bool(torch.rand((), generator=self.generator) < p)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else x - lo  # ScaleIntensity to [0, 1]
        if self.train:
            if self._coin(0.5):
                k = int(torch.randint(1, 4, (), generator=self.generator))
                x = torch.rot90(x, k, dims=(1, 2))
            if self._coin(0.5):
                x = torch.flip(x, dims=(1,))
            if self._coin(0.5):
                x = torch.flip(x, dims=(2,))
            if self._coin(0.3):
                x = x + 0.03 * torch.randn(x.shape, generator=self.generator)
        return x.contiguous()


def make_transforms(train: bool, seed: int, use_monai: bool = True) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The per-image pipeline and the name of what implements it (``"monai"`` or ``"torch"``)."""
    if use_monai:
        try:
            return MonaiTransforms(train, seed), "monai"
        except ImportError:
            pass
    return TorchTransforms(train, seed), "torch"


class ImageDataset(Dataset):
    """``uint8`` images ``(N, C, H, W)`` and labels, with a per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


# --------------------------------------------------------------------------- the data module


class MedMNISTDataModule(ember.DataModule):
    """Train / validation / test splits of a 28x28 MedMNIST 2D data set (or its synthetic stand-in).

    :param flag: ``"bloodmnist"`` (3 channels, 8 classes) or ``"pneumoniamnist"`` (1 channel, 2 classes).
    :param root: folder holding ``{flag}.npz``; default ``$MEDMNIST_ROOT`` or ``~/.medmnist``.
    :param source: ``"auto"`` (MedMNIST if available, else synthetic), ``"medmnist"`` or ``"synthetic"``.
    :param download: try to download a missing ``.npz`` once (only with ``source`` ``"auto"`` or ``"medmnist"``).
    :param download_timeout: seconds the download attempt may take in all.
    :param synthetic_sizes: images in the synthetic train, validation and test splits.
    :param data_seed: seed of the synthetic data and of the augmentations (independent of the training seed).
    :param augment: random rotations, flips and noise on training images.
    :param use_monai: use MONAI's transforms when it is installed (torch code otherwise, or with ``false``).
    """

    def __init__(
        self,
        flag: str = "bloodmnist",
        root: str | None = None,
        source: str = "auto",
        download: bool = True,
        download_timeout: float = 10.0,
        synthetic_sizes: list[int] = [2000, 500, 500],  # noqa: B006 - never mutated; a list reads well in TOML
        batch_size: int = 64,
        data_seed: int = 0,
        augment: bool = True,
        use_monai: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        _show_log_messages()
        if flag not in DATASETS:
            raise ValueError(f"flag must be one of {sorted(DATASETS)}, not {flag!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        if len(synthetic_sizes) != 3 or min(synthetic_sizes) < 1:
            raise ValueError(f"synthetic_sizes must be three positive sizes (train, val, test), not {synthetic_sizes!r}")
        self.save_hyperparameters()
        self.flag = flag
        self.root = Path(root).expanduser() if root else None
        self.source = source
        self.download = download
        self.download_timeout = download_timeout
        self.synthetic_sizes = [int(s) for s in synthetic_sizes]
        self.batch_size = batch_size
        self.data_seed = data_seed
        self.augment = augment
        self.use_monai = use_monai
        self.num_workers = num_workers
        self.n_channels: int = DATASETS[flag]["n_channels"]
        self.class_names: list[str] = list(DATASETS[flag]["labels"])
        self.num_classes = len(self.class_names)
        #: ``"medmnist"`` or ``"synthetic"`` once ``setup`` has run.
        self.data_source: str | None = None
        self.transforms_backend: str | None = None
        self.train_set: ImageDataset | None = None
        self.val_set: ImageDataset | None = None
        self.test_set: ImageDataset | None = None
        self._download_error: str | None = None

    @property
    def npz_path(self) -> Path:
        return (self.root or default_root()) / f"{self.flag}.npz"

    def prepare_data(self) -> None:
        if self.source == "synthetic" or self.npz_path.is_file() or not self.download:
            return
        log.info("Downloading %s to %s (at most %g s) ...", self.flag, self.npz_path, self.download_timeout)
        self._download_error = try_download(
            ZENODO_URL.format(flag=self.flag), self.npz_path, DATASETS[self.flag]["md5"], self.download_timeout
        )

    def _load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        path = self.npz_path
        if self.source != "synthetic" and path.is_file():
            self.data_source = "medmnist"
            with np.load(path) as npz:
                return {split: (npz[f"{split}_images"], npz[f"{split}_labels"]) for split in ("train", "val", "test")}
        why = "source = 'synthetic'" if self.source == "synthetic" else f"no {path}"
        if self.source != "synthetic" and self._download_error:
            why += f"; download failed ({self._download_error})"
        elif self.source != "synthetic" and not self.download:
            why += "; download = false"
        if self.source == "medmnist":
            raise FileNotFoundError(
                f"MedMNIST {self.flag} is not available ({why}). Put {self.flag}.npz in {path.parent} "
                "(or set $MEDMNIST_ROOT), or use source = 'auto' to fall back to the synthetic stand-in."
            )
        self.data_source = "synthetic"
        if self.source == "synthetic":
            log.warning("Using the synthetic stand-in for MedMNIST %s (source = 'synthetic').", self.flag)
        else:
            log.warning("MedMNIST not available offline: using the synthetic stand-in (%s).", why)
        return {
            split: synthetic_medmnist(n, self.n_channels, self.num_classes, seed=self.data_seed + 1000 * i)
            for i, (split, n) in enumerate(zip(("train", "val", "test"), self.synthetic_sizes, strict=True))
        }

    def _check_model(self) -> None:
        module = getattr(getattr(self, "trainer", None), "module", None)
        hparams = getattr(module, "hparams", None) or {}
        for name, expected in (("in_channels", self.n_channels), ("num_classes", self.num_classes)):
            got = hparams.get(name) if hasattr(hparams, "get") else None
            if got is not None and got != expected:
                raise ValueError(
                    f"The model has {name} = {got} but {self.flag} has {expected}: set model.init_args.{name} = {expected} in the stack."
                )

    def setup(self, stage: str | None = None) -> None:
        self._check_model()
        if self.train_set is not None:
            return
        splits = self._load_splits()
        train_tf, backend = make_transforms(self.augment, self.data_seed, self.use_monai)
        eval_tf, _ = make_transforms(False, self.data_seed, self.use_monai)
        self.transforms_backend = backend
        if backend == "torch" and self.use_monai:
            log.warning("MONAI is not installed: using the torch versions of the transforms (pip install -r requirements.txt for MONAI).")
        datasets = {}
        for split, (images, labels) in splits.items():
            x = torch.from_numpy(np.ascontiguousarray(images))
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
            y = torch.from_numpy(np.asarray(labels).reshape(-1).astype(np.int64))
            datasets[split] = ImageDataset(x, y, train_tf if split == "train" else eval_tf)
        self.train_set, self.val_set, self.test_set = datasets["train"], datasets["val"], datasets["test"]
        log.info(
            "%s data (%s): %d train / %d val / %d test images, %d channel(s), %d classes; transforms: %s.",
            self.flag,
            self.data_source,
            len(self.train_set),
            len(self.val_set),
            len(self.test_set),
            self.n_channels,
            self.num_classes,
            backend,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return DataLoader(self.val_set, batch_size=256, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return DataLoader(self.test_set, batch_size=256, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # The splits are a pure function of the hyperparameters (and the file).
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
