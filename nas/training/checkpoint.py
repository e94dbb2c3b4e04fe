"""Checkpoints: a trainer's whole state and the curve so far, written so that a kill at any moment leaves the
previous checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any], curve: list[dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save({"trainer": state, "curve": curve}, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path, device: torch.device) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The trainer state and the curve of a checkpoint."""
    stored = torch.load(path, map_location=device, weights_only=False)
    return stored["trainer"], stored["curve"]
