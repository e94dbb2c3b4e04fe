"""`python -m scaling.predict --family ID --member B0 IMAGE...` (or `--run RUN_ID`, or `--export DIR --member B0`):
classify image files with a trained network, from the database or from an export folder, as the exported models
would: pixels in [0, 1] at the training resolution, normalised inside."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import Database, open_database, resolve_url, training
from effnas.cli import CommandParser, UsageError, add_db_option, command
from effnas.records import TrainingRun, TrainingStatus
from scaling.family import trained_runs

FORMATS = ("table", "json")


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m scaling.predict",
                           description="Classify image files with a trained network (from scaling.train).")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--family", type=int, metavar="ID", help="the family of --member")
    parser.add_argument("--export", metavar="DIR", help="an export folder (from scaling.export) to take --member from")
    parser.add_argument("--member", metavar="NAME",
                        help="with --family: its exported run of this member; with --export: this member's files")
    parser.add_argument("--run", type=int, metavar="RUN_ID", help="a training run by id")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (3)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="print a table or JSON (table)")
    add_db_option(parser)
    return parser


def find_run(db: Database, args: argparse.Namespace) -> TrainingRun:
    if args.run is not None:
        if args.family is not None or args.member is not None:
            raise UsageError("give one of --run RUN_ID, --family ID --member NAME, --export DIR --member NAME")
        run = training.get_run(db, args.run)
        if run is None:
            raise UsageError(f"no training run with id {args.run}")
        if run.status is not TrainingStatus.COMPLETE:
            raise UsageError(f"training run {args.run} is {run.status}, not complete")
        return run
    if args.family is None or args.member is None:
        raise UsageError("give --family ID --member NAME (e.g. --member B0), or --run RUN_ID")
    run = next((run for name, run in trained_runs(db, args.family).items() if name.upper() == args.member.upper()),
               None)
    if run is None:
        raise UsageError(f"member {args.member} of family {args.family} has no complete training run; train it with "
                         f"python -m scaling.train --family {args.family} --members {args.member}")
    return run


@dataclass(frozen=True)
class Classifier:
    """A trained network that takes pixels in [0, 1], with the input it expects and the names of its classes."""

    network: Any
    channels: int
    resolution: int
    classes: list[str]
    described: str


def trained_network(args: argparse.Namespace) -> Classifier:
    """The network named by --export and --member, --family and --member, or --run."""
    if args.export is not None:
        if args.member is None or args.run is not None or args.family is not None:
            raise UsageError("--export DIR takes --member NAME (and neither --run nor --family)")
        from scaling.exported import ExportFolderError, load_member

        try:
            network = load_member(args.export, args.member)
        except ExportFolderError as exc:
            raise UsageError(str(exc)) from None
        contract = network.contract
        return Classifier(network, contract["input"]["channels"], contract["input"]["resolution"],
                          contract["classes"], f"{contract['member']} from {args.export}, test accuracy "
                                               f"{contract['accuracy']['test']['mean']:.4f} (mean over seeds)")
    run = find_run(open_database(resolve_url(args.db), create=False), args)
    from nas.training.weights import WeightsError, load_weights

    try:
        weights = load_weights(run.weights_path, run.weights_sha256)
    except WeightsError as exc:
        raise UsageError(str(exc)) from None
    return Classifier(weights.model(), weights.spec.in_channels, weights.spec.resolution, weights.classes,
                      f"run {run.id} ({run.label}), test accuracy {run.test_accuracy:.4f}")


def read_image(path: Path, channels: int, resolution: int):
    """Float pixels in [0, 1], shape (channels, resolution, resolution)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            converted = image.convert("L" if channels == 1 else "RGB").resize((resolution, resolution),
                                                                              Image.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from None
    array = np.asarray(converted, dtype=np.float32) / 255.0
    return torch.from_numpy(array.reshape(resolution, resolution, channels).transpose(2, 0, 1).copy())


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise UsageError(f"no such image file: {missing[0]}")
    classifier = trained_network(args)
    import torch

    batch = torch.stack([read_image(Path(image), classifier.channels, classifier.resolution) for image in args.images])
    with torch.no_grad():
        probabilities = classifier.network(batch).softmax(1)
    classes = classifier.classes or [str(i) for i in range(probabilities.shape[1])]
    top = min(args.top, len(classes))
    results = []
    for image, row in zip(args.images, probabilities):
        values, indices = row.topk(top)
        results.append({"image": image, "predictions": [
            {"class": classes[int(i)], "label": int(i), "probability": float(v)} for v, i in zip(values, indices)]})
    if args.format == "json":
        print(json.dumps({"network": classifier.described, "results": results}, indent=2))
    else:
        print(f"{classifier.described}:")
        for result in results:
            shown = ", ".join(f"{p['class']} {p['probability']:.3f}" for p in result["predictions"])
            print(f"{result['image']}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
