"""Trained networks as a user takes them away: float pixels in [0, 1] in, logits out, the data set's
normalisation inside the graph, so nothing of effnas is needed to run them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.space.builder import build_model
from nas.space.spec import ArchSpec, spec_from_dict, spec_to_dict


class WeightsError(Exception):
    """A weights file that is missing or not the one its training run stored; one line for the user."""


class NormalizedNetwork(nn.Module):
    """`network((pixels - mean) / std)` for pixels in [0, 1], shape (N, C, H, W)."""

    def __init__(self, network: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network((pixels - self.mean) / self.std)


@dataclass(frozen=True)
class TrainedWeights:
    """The weights file's one description: the network as trained, its chosen weights, the training split's
    normalisation, the class names, and which run, weights (raw or EMA) and epoch they came from."""

    spec: ArchSpec
    state_dict: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    run_id: int
    chosen_weights: str | None = None
    epoch: int | None = None

    def model(self) -> NormalizedNetwork:
        network = build_model(self.spec)
        network.load_state_dict(self.state_dict)
        return NormalizedNetwork(network, self.mean, self.std).eval()

    def save(self, path: Path) -> str:
        """Write the file; its SHA-256."""
        torch.save({"state_dict": self.state_dict, "arch": spec_to_dict(self.spec), "mean": list(self.mean),
                    "std": list(self.std), "classes": self.classes, "run_id": self.run_id,
                    "weights": self.chosen_weights, "epoch": self.epoch}, path)
        return sha256_of(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(path: str | Path, sha256: str | None) -> TrainedWeights:
    """The weights file a training run wrote, checked against the SHA-256 the run stored."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing")
    if sha256 is not None and sha256_of(path) != sha256:
        raise WeightsError(f"weights file {path} is not the one its training run wrote (SHA-256 differs)")
    stored = torch.load(path, map_location="cpu", weights_only=False)
    return TrainedWeights(spec_from_dict(stored["arch"]), stored["state_dict"], tuple(stored["mean"]),
                          tuple(stored["std"]), list(stored.get("classes") or []), int(stored["run_id"]),
                          stored.get("weights"), stored.get("epoch"))
