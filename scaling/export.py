"""`python -m scaling.export --family ID --out DIR [--files ...] [--members B0,B1] [--quantize int8]`: a family as
a folder a user takes away and deploys.

Per member: `<member>.json` (our spec, buildable with `nas.space.builder.build_model`), `<member>.onnx` (any batch),
`<member>.pt2` (a `torch.export` program, any batch) and, for a trained member, `<member>.safetensors`; with
`--quantize int8`, `<member>.int8.onnx`, statically quantised by ONNX Runtime and calibrated on training images.
TorchScript (`--files torchscript`, deprecated by PyTorch) only when asked for. A trained member's programs take
float pixels in [0, 1], shape (N, C, H, W) at its training resolution, with the normalisation inside the graph; of
its runs (seeds) the one with the highest validation accuracy is exported, and its accuracy is given over all
seeds. An untrained member gets programs with random weights, marked untrained, and never an accuracy.

Every file carries the member's contract (see `scaling.export_contract`); `family.json` is the one manifest (the
contracts, the SHA-256 of every file, the family's table and official TF parameters); `README.md` is a model card.
Files are written to a hidden staging folder inside `--out` and moved in only when all are written, so a failed export
leaves nothing behind. Members are built and freed one at a time, so B7 exports within the memory B7 needs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import Database, open_database, resolve_url
from db.families import get_family
from effnas.cli import CommandParser, UsageError, add_db_option, command, fail
from effnas.records import Family, TrainingRun
from nas.space.spec import ArchSpec, spec_from_dict, to_json
from nas.training.weights import WeightsError, load_weights, sha256_of
from scaling.export_contract import MemberToExport, member_contract, origin, seed_results
from scaling.family import family_json, trained_runs
from scaling.model_card import model_card

FORMATS = ("json", "onnx", "pt2", "safetensors", "torchscript")
DEFAULT_FORMATS = ("json", "onnx", "pt2", "safetensors")
SUFFIXES = {"json": ".json", "onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors",
            "torchscript": ".torchscript.pt", "int8": ".int8.onnx"}
MANIFEST = "family.json"
CARD = "README.md"


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    members: tuple[str, ...] | None = None
    quantize: str | None = None


def parse_formats(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in FORMATS]
    if not chosen or unknown:
        raise UsageError(f"unknown file format {', '.join(unknown) or repr(text)} in --files; choose from "
                         f"{', '.join(FORMATS)}")
    return chosen


def member_file(member: str, fmt: str) -> str:
    return f"{member.lower()}{SUFFIXES[fmt]}"


def tf_params(spec: ArchSpec) -> dict[str, Any]:
    """The member in the official TF code's terms: blocks_args strings plus its global parameters."""
    return {
        "blocks_args": spec.block_strings(),
        "width_coefficient": spec.width,
        "depth_coefficient": spec.depth,
        "resolution": spec.resolution,
        "dropout_rate": spec.dropout,
        "drop_connect_rate": spec.drop_connect,
        "num_classes": spec.num_classes,
        "depth_divisor": 8,
        "note": "ds_/cn_ tagged blocks are effnas extensions (depthwise-separable, regular conv)",
    }


def member_formats(trained: bool, options: ExportOptions) -> tuple[str, ...]:
    """The files written for a member: weights and int8 only where it was `trained`."""
    chosen = tuple(fmt for fmt in options.formats if fmt != "safetensors" or trained)
    return chosen + (("int8",) if options.quantize and trained else ())


def chosen_members(family: Family, runs: dict[str, TrainingRun], options: ExportOptions) -> list[str]:
    """The members to export, checked: each named one exists, and --quantize has trained weights to quantise."""
    names = [member.name for member in family.members]
    if options.members is None:
        chosen = names
    else:
        by_upper = {name.upper(): name for name in names}
        missing = [name for name in options.members if name.upper() not in by_upper]
        if missing:
            raise UsageError(f"family {family.id} has no member {missing[0]} (it has {', '.join(names)})")
        chosen = [by_upper[name.upper()] for name in options.members]
    if options.quantize:
        if "onnx" not in options.formats:
            raise UsageError("--quantize int8 quantises the ONNX model: keep onnx in --files")
        untrained = [name for name in chosen if name not in runs]
        if untrained and (options.members is not None or len(untrained) == len(chosen)):
            raise UsageError(f"--quantize int8 needs trained weights, and {untrained[0]} is untrained; train it "
                             f"first: python -m scaling.train --family {family.id} --members {untrained[0]}")
    return chosen


def planned_files(chosen: list[str], runs: dict[str, TrainingRun], options: ExportOptions) -> list[str]:
    return [MANIFEST, CARD] + [member_file(name, fmt) for name in chosen
                               for fmt in member_formats(name in runs, options)]


def check_output_dir(out: Path, files: list[str], force: bool) -> None:
    """Refuse before writing anything: a file in the way without --force, or a folder that cannot be written."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    existing = [name for name in files if (out / name).exists()]
    if existing and not force:
        raise UsageError(f"{out / existing[0]} already exists (and {len(existing) - 1} more); use --force to overwrite")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot create output directory {out}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {out} is not writable")


def export_member(export: MemberToExport, contract: dict[str, Any], out: Path, formats: tuple[str, ...]) -> None:
    """Write one member's files (of `formats`, bar int8) into `out`."""
    import torch

    from nas.space.builder import build_model
    from scaling import model_files

    name, spec = export.member.name, export.spec
    if "json" in formats:
        (out / member_file(name, "json")).write_text(to_json(spec) + "\n")
    model = export.weights.model() if export.weights is not None else build_model(spec).eval()
    # Batch 2: an example of batch 1 would let the exporters fix the batch dimension, which must stay free.
    example = torch.zeros(2, spec.in_channels, spec.resolution, spec.resolution)
    for fmt in formats:
        path = out / member_file(name, fmt)
        if fmt in model_files.PROGRAM_WRITERS:
            model_files.PROGRAM_WRITERS[fmt](model, example, path, contract)
        elif fmt == "safetensors":
            model_files.write_safetensors(model, path, contract)
    del model, example
    gc.collect()


def quantize_member(export: MemberToExport, out: Path) -> dict[str, Any]:
    """`<member>.int8.onnx` from the float ONNX, calibrated on the run's first training images; both models'
    accuracy on the run's test split (read here for the report only: nothing is chosen by it) and their sizes."""
    from nas.training.config import TaskConfig
    from nas.training.data import load_task_data
    from scaling import model_files

    run, name = export.run, export.member.name
    task = TaskConfig(dataset=run.dataset, data_dir=run.data.get("data_dir"), threads=run.data.get("threads", 1),
                      device="cpu")
    data = load_task_data(task, run.resolution, subset=run.data.get("subset"), val_images=run.data.get("val_images"),
                          test=True, test_dir=run.data.get("test_dir"))
    calibration = (pixels.numpy() for pixels, _ in data.pixel_batches(data.train, model_files.CALIBRATION_BATCH,
                                                                       model_files.CALIBRATION_IMAGES))
    float_path, int8_path = out / member_file(name, "onnx"), out / member_file(name, "int8")
    model_files.quantize_int8(float_path, int8_path, calibration)

    def test_batches():
        return ((pixels.numpy(), labels.numpy()) for pixels, labels in data.pixel_batches(data.test, 500))

    return {"file": int8_path.name, "test_accuracy": model_files.onnx_accuracy(int8_path, test_batches()),
            "float_test_accuracy": model_files.onnx_accuracy(float_path, test_batches()),
            "test_images": len(data.test), "calibration_images": min(model_files.CALIBRATION_IMAGES, len(data.train)),
            "bytes": int8_path.stat().st_size, "float_bytes": float_path.stat().st_size,
            "method": "ONNX Runtime static quantisation, QDQ, int8 weights per channel, uint8 activations, MinMax "
                      "calibration on training images"}


def stored_resolution(run: TrainingRun) -> int | None:
    """The side of the training images as the data set stores them, for the card's word on upsampling; None for
    an image folder, whose files vary."""
    from nas.training.data import TensorImages, read_split

    images, _ = read_split(run.dataset, run.data.get("data_dir"), run.resolution, "train")
    return int(images.pixels.shape[-1]) if isinstance(images, TensorImages) else None


def members_to_export(db: Database, family: Family, runs: dict[str, TrainingRun],
                      chosen: list[str]) -> list[MemberToExport]:
    """The chosen members with their trained weights (checked against the SHA-256 their runs stored)."""
    seeds = seed_results(db, family.id, runs)
    exports = []
    for member in family.members:
        if member.name not in chosen:
            continue
        run = runs.get(member.name)
        if run is None:
            exports.append(MemberToExport(member, spec_from_dict(member.arch)))
            continue
        weights = load_weights(run.weights_path, run.weights_sha256)
        exports.append(MemberToExport(member, weights.spec, weights, run, seeds[member.name]))
    return exports


def export_family(db: Database, family: Family, runs: dict[str, TrainingRun], out: Path, options: ExportOptions,
                  on_member: Callable[[str], None] | None = None) -> list[Path]:
    """Write the chosen members, manifest and card into `out` (already checked) through a staging folder in it, so
    that nothing is left behind when a member fails; return the paths written."""
    chosen = chosen_members(family, runs, options)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        manifest, contracts, int8 = _write_members(db, family, runs, chosen, staging, options, on_member)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        native = stored_resolution(next(iter(runs.values()))) if runs else None
        (staging / CARD).write_text(model_card(family.name, contracts, int8, native))
        written = []
        for path in sorted(staging.iterdir()):
            path.replace(out / path.name)
            written.append(out / path.name)
    except BaseException:
        shutil.rmtree(out if created else staging, ignore_errors=True)
        raise
    staging.rmdir()
    return written


def _write_members(db: Database, family: Family, runs: dict[str, TrainingRun], chosen: list[str], staging: Path,
                   options: ExportOptions, on_member: Callable[[str], None] | None
                   ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    described_family = family_json(family, runs)
    described = {entry["name"]: entry for entry in described_family["members"]}
    manifest = {**described_family, "formats": list(options.formats), "quantize": options.quantize, "members": []}
    made_by = origin(db, family)
    contracts, int8 = [], {}
    for export in members_to_export(db, family, runs, chosen):
        name = export.member.name
        formats = member_formats(export.trained, options)
        contract = member_contract(export, made_by)
        export_member(export, contract, staging, formats)
        entry = {**described[name], "trained": export.trained, "run_id": export.run.id if export.run else None,
                 "seed": export.run.recipe.get("seed") if export.run else None, "tf": tf_params(export.spec),
                 "contract": contract}
        if "int8" in formats:
            int8[name] = entry["int8"] = quantize_member(export, staging)
        files = {fmt: member_file(name, fmt) for fmt in formats}
        entry["files"] = files
        entry["sha256"] = {path: sha256_of(staging / path) for path in files.values()}
        manifest["members"].append(entry)
        contracts.append({**contract, "files": list(files.values())})
        if on_member is not None:
            on_member(name)
    return manifest, contracts, int8


def load_family(db: Database, family_id: int) -> tuple[Family, dict[str, TrainingRun]]:
    """The stored family and its members' exported runs; UsageError when there is no such family."""
    family = get_family(db, family_id)
    if family is None:
        raise UsageError(f"no family with id {family_id}")
    return family, trained_runs(db, family_id)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="python -m scaling.export", description="Export a stored family.")
    parser.add_argument("--family", type=int, required=True, metavar="ID", help="family id (from scaling.grow)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--files", default=",".join(DEFAULT_FORMATS),
                        help=f"which files to write per member, comma-separated, of {', '.join(FORMATS)} "
                             f"({','.join(DEFAULT_FORMATS)}; torchscript is deprecated by PyTorch)")
    parser.add_argument("--members", metavar="NAMES", help="comma-separated members, e.g. B0,B1 (all)")
    parser.add_argument("--quantize", choices=("int8",),
                        help="also write each trained member's ONNX model statically quantised to int8, calibrated "
                             "on training images, with its test accuracy and size beside the float model's")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    add_db_option(parser)
    return parser


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    out = Path(args.out)
    members = tuple(m.strip() for m in args.members.split(",") if m.strip()) if args.members else None
    options = ExportOptions(parse_formats(args.files), members, args.quantize)
    db = open_database(resolve_url(args.db), create=False)
    family, runs = load_family(db, args.family)
    chosen = chosen_members(family, runs, options)
    check_output_dir(out, planned_files(chosen, runs, options), args.force)
    if "torchscript" in options.formats:
        print("note: TorchScript is deprecated by PyTorch; the .pt2 program (torch.export) replaces it",
              file=sys.stderr, flush=True)
    done = []

    def progress(name: str) -> None:
        done.append(name)
        print(f"exported {name} ({len(done)}/{len(chosen)})", file=sys.stderr, flush=True)

    try:
        paths = export_family(db, family, runs, out, options, progress)
    except WeightsError as exc:
        fail(str(exc), code=1, prog=parser.prog)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}", code=1, prog=parser.prog)
    print(f"Wrote {len(paths)} files for family {args.family} to {out} (manifest: {out / MANIFEST}, "
          f"model card: {out / CARD})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
