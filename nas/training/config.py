"""What a training is made of, holding every default: the task (data, device, threads) and the two recipes, the
proxy's short training and the final training. Command-line defaults and help texts are read from here.

A recipe is data; `nas.training.engine` turns it into an optimizer, a schedule, an EMA and augmentation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from effnas.cli import UsageError

PROXY_OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("mnist", "fashion-mnist", "idx", "cifar10", "imagefolder")
# Data sets whose classes do not change under a left-right mirror (digits and letters do).
FLIP_DATASETS = ("fashion-mnist", "cifar10", "imagefolder")


class DataError(UsageError):
    """A data set that cannot be read; the message is one line meant for the user."""


@dataclass(frozen=True)
class TaskConfig:
    """Which data, split how, trained where."""

    dataset: str = "mnist"
    data_dir: str | None = None
    # A proxy trains on a few thousand images (the embedded MNIST subset has 5,000); None takes every image.
    subset: int | None = 5000
    val_fraction: float = 0.2
    # Part of reproducibility: float reductions (data normalisation, training) round differently per thread count.
    threads: int = 1
    # auto: the GPU when the training process sees one (NNI's gpuIndices decide which), else the CPU.
    device: str = "auto"


@dataclass(frozen=True)
class ProxyConfig:
    """The short training that ranks candidates: one-cycle schedule, no augmentation, no EMA, no dropout or
    stochastic depth (a few epochs underfit). `seed` also seeds the search strategy."""

    resolution: int = 32
    epochs: int = 3
    # AdamW at batch 64 was chosen by bench/proxy_fidelity.py: at the same 12k image passes as SGD at batch 128
    # (the default before), it ranks 25 architectures by trained accuracy far closer and repeats across seeds.
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    momentum: float = 0.9
    weight_decay: float = 0.05
    eval_batch_size: int = 500
    # sgd: Nesterov SGD (momentum above); adamw: AdamW.
    optimizer: str = "adamw"
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class SupernetConfig:
    """Training a weight-sharing supernet of the search space (`nas.training.supernet`) with the sandwich rule and
    in-place distillation, on the proxy's optimizer, batch, learning rate and seed; and scoring its paths."""

    # One epoch fits half the default 9-minute search on 2 cores (about 2 minutes on 4,000 images at 32 px), and
    # 2 or 4 ranked the evaluation table no better (bench/supernet_fidelity.py).
    epochs: int = 1
    # Per step, besides the largest and the smallest path: BigNAS's two.
    random_paths: int = 2
    # OFA's learned transform from the 5x5 kernel's centre to the 3x3 kernel.
    kernel_transform: bool = False
    # Training images a path's BatchNorm statistics are re-estimated on before it is scored.
    calibration_images: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingRecipe:
    """Final training: SGD with Nesterov momentum, warm-up then cosine, label smoothing, an EMA of the weights,
    crop / flip / erasing augmentation, the member's dropout and this drop-connect."""

    epochs: int = 30
    batch_size: int = 128
    # 0.1 made the loss climb back to chance at the end of warm-up on Fashion-MNIST (found B0, 55k images).
    lr: float = 0.05
    momentum: float = 0.9
    # Chosen on the validation split by bench/final_training.py (found B0, 30 epochs): 5e-5 gave 0.9176, 5e-4 0.925.
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    ema_decay: float = 0.999
    flip: bool = False
    erasing: float = 0.25
    drop_connect: float = 0.2
    seed: int = 0
    eval_batch_size: int = 500

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        """Equal recipes, equal keys: runs with one key were trained the same way (epochs included)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def default(config: type, name: str) -> Any:
    """The default of field `name` of a config dataclass."""
    for item in fields(config):
        if item.name == name:
            if item.default is MISSING:
                raise KeyError(f"{config.__name__}.{name} has no default")
            return item.default
    raise KeyError(f"{config.__name__} has no field {name}")


def resolve_device(device: str) -> str:
    """`auto` becomes `cuda` where this process sees a GPU, else `cpu`; DataError when `cuda` is asked for and
    there is none."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for, but this process sees no CUDA GPU")
    return device
