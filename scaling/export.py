"""`python -m scaling.export --family ID --out DIR [--files json,onnx,torchscript,weights]`: the family as spec
JSON, ONNX and TorchScript files, with the trained weights of every member that `scaling.train` trained.

A trained member is exported as trained: its state dict (`<member>.weights.pt`), and ONNX and TorchScript models
that take float pixels in [0, 1] of shape (N, C, H, W) at the member's training resolution (fixed H and W, any
batch) with the data set's normalisation inside the graph. Of a member's runs (seeds, recipes) the one with the
highest validation accuracy is exported; the manifest names it (run, seed, test accuracy). An untrained member
is exported with random weights and no normalisation, and the manifest marks it untrained.

Per member `<member>.json` (our spec format, loadable with `nas.space.spec.from_json` and buildable with
`nas.space.builder.build_model`), `<member>.onnx`, `<member>.torchscript.pt`; plus `family.json`, the manifest with the
summary table, how the family was made, and each member's official TF block strings and global parameters.
Members are built, exported and freed one at a time, so B7 exports within the memory B7 itself needs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from db import Database, open_database, resolve_url
from db.families import get_family
from effnas.cli import CommandParser, UsageError, add_db_option, command, fail
from effnas.records import Family, TrainingRun
from nas.space.spec import ArchSpec, spec_from_dict, to_json
from nas.training.weights import TrainedWeights, WeightsError, load_weights
from scaling.family import family_json, trained_runs

FORMATS = ("json", "onnx", "torchscript", "weights")
SUFFIXES = {"json": ".json", "onnx": ".onnx", "torchscript": ".torchscript.pt", "weights": ".weights.pt"}
MANIFEST = "family.json"
ONNX_OPSET = 17


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


def member_formats(trained: bool, formats: tuple[str, ...]) -> tuple[str, ...]:
    """The formats written for a member: weights only where it was `trained`."""
    return tuple(fmt for fmt in formats if fmt != "weights" or trained)


def planned_files(family: Family, runs: dict[str, TrainingRun], formats: tuple[str, ...]) -> list[str]:
    return [MANIFEST] + [member_file(m.name, fmt) for m in family.members
                         for fmt in member_formats(m.name in runs, formats)]


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


def export_member(spec: ArchSpec, name: str, out: Path, formats: tuple[str, ...],
                   trained: TrainedWeights | None = None) -> None:
    import torch

    from nas.space.builder import build_model

    if trained is not None:
        spec = trained.spec
    if "json" in formats:
        (out / member_file(name, "json")).write_text(to_json(spec) + "\n")
    if "weights" in formats and trained is not None:
        trained.save(out / member_file(name, "weights"))
    if "onnx" not in formats and "torchscript" not in formats:
        return
    model = trained.model() if trained is not None else build_model(spec).eval()
    example = torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution)
    with torch.no_grad():
        if "onnx" in formats:
            torch.onnx.export(
                model, (example,), str(out / member_file(name, "onnx")), dynamo=False, opset_version=ONNX_OPSET,
                input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            )
        if "torchscript" in formats:
            torch.jit.trace(model, example).save(str(out / member_file(name, "torchscript")))
    del model, example
    gc.collect()


def export_family(
    family: Family,
    runs: dict[str, TrainingRun],
    out: Path,
    formats: tuple[str, ...] = FORMATS,
    on_member: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the family's files into `out` (which must already be checked), with the trained weights of the
    members in `runs` (member name -> training run); return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    described_family = family_json(family, runs)
    manifest = {**described_family, "formats": list(formats), "members": []}
    for member, described in zip(family.members, described_family["members"]):
        name = member.name
        run = runs.get(name)
        trained = load_weights(run.weights_path, run.weights_sha256) if run else None
        chosen = member_formats(trained is not None, formats)
        spec = trained.spec if trained is not None else spec_from_dict(member.arch)
        export_member(spec, name, out, chosen, trained)
        files = {fmt: member_file(name, fmt) for fmt in chosen}
        written += [out / path for path in files.values()]
        manifest["members"].append({
            **described, "files": files, "tf": tf_params(spec),
            "trained": trained is not None, "run_id": run.id if run else None,
            "seed": run.recipe.get("seed") if run else None,
            "input": ({"pixels": "float in [0, 1]", "shape": ["N", spec.in_channels, spec.resolution,
                                                               spec.resolution],
                       "normalisation": {"mean": trained.mean, "std": trained.std}, "classes": trained.classes}
                      if trained is not None else "normalised pixels (random weights: train the member first)"),
        })
        if on_member is not None:
            on_member(name)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return [out / MANIFEST] + written


def load_family(db: Database, family_id: int) -> tuple[Family, dict[str, TrainingRun]]:
    """The stored family and its members' latest complete training runs; UsageError when there is none."""
    family = get_family(db, family_id)
    if family is None:
        raise UsageError(f"no family with id {family_id}")
    return family, trained_runs(db, family_id)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="python -m scaling.export", description="Export a stored family.")
    parser.add_argument("--family", type=int, required=True, metavar="ID", help="family id (from scaling.grow)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--files", default=",".join(FORMATS),
                        help=f"which files to write per member, comma-separated: {', '.join(FORMATS)} (all)")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    add_db_option(parser)
    return parser


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    out = Path(args.out)
    formats = parse_formats(args.files)
    family, runs = load_family(open_database(resolve_url(args.db), create=False), args.family)
    check_output_dir(out, planned_files(family, runs, formats), args.force)
    total = len(family.members)
    done = []

    def progress(name: str) -> None:
        done.append(name)
        print(f"exported {name} ({len(done)}/{total})", file=sys.stderr, flush=True)

    try:
        paths = export_family(family, runs, out, formats, progress)
    except WeightsError as exc:
        fail(str(exc), code=1, prog=parser.prog)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}", code=1, prog=parser.prog)
    print(f"Wrote {len(paths)} files for family {args.family} to {out} (manifest: {out / MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
