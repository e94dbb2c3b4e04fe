"""An export folder read back: `load_member(folder, "B2")` gives the member as a `torch.nn.Module` with its trained
weights, built from its spec and safetensors file after checking both against the SHA-256 that `family.json`
records. The network takes float pixels in [0, 1] and normalises inside, as the exported ONNX and .pt2 do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.space.builder import build_model
from nas.space.spec import SpecError, from_json
from nas.training.weights import NormalizedNetwork, sha256_of
from scaling.export import MANIFEST
from scaling.model_files import read_safetensors


class ExportFolderError(Exception):
    """An export folder that cannot give the member asked for; one line for the user."""


def read_manifest(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ExportFolderError(f"{folder} is not an export folder: it has no {MANIFEST} (write one with "
                                f"python -m scaling.export)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportFolderError(f"cannot read {path}: {exc}") from None


def member_entry(manifest: dict[str, Any], folder: Path | str, name: str) -> dict[str, Any]:
    """The manifest's entry of member `name` (any case)."""
    members = {entry["name"].upper(): entry for entry in manifest["members"]}
    if name.upper() not in members:
        raise ExportFolderError(f"{folder} has no member {name} (it has {', '.join(e['name'] for e in manifest['members'])})")
    return members[name.upper()]


def checked_file(folder: Path, entry: dict[str, Any], fmt: str) -> Path:
    """The member's file of format `fmt`, present and with the SHA-256 the manifest records."""
    name = entry["files"].get(fmt)
    if name is None:
        raise ExportFolderError(f"{entry['name']} has no {fmt} file in {folder}"
                                + ("" if entry["trained"] else f": {entry['name']} is untrained"))
    path = folder / name
    if not path.is_file():
        raise ExportFolderError(f"{path} is missing")
    if sha256_of(path) != entry["sha256"][name]:
        raise ExportFolderError(f"{path} does not match the SHA-256 in {MANIFEST}: it changed after the export")
    return path


def load_member(folder: Path | str, name: str) -> NormalizedNetwork:
    """Member `name` of an export folder, trained weights loaded, in eval mode; its contract as `.contract`."""
    folder = Path(folder)
    entry = member_entry(read_manifest(folder), folder, name)
    if not entry["trained"]:
        raise ExportFolderError(f"{entry['name']} is untrained: its export has no weights to load")
    spec_path, weights_path = checked_file(folder, entry, "json"), checked_file(folder, entry, "safetensors")
    try:
        spec = from_json(spec_path.read_text())
    except SpecError as exc:
        raise ExportFolderError(f"{spec_path}: {exc}") from None
    state, contract = read_safetensors(weights_path)
    normalisation = contract["input"]["normalisation"]
    network = NormalizedNetwork(build_model(spec), tuple(normalisation["mean"]), tuple(normalisation["std"]))
    network.load_state_dict(state)
    network.contract = contract
    return network.eval()
