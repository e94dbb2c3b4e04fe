"""`python -m scaling.predict --family ID --member B0 IMAGE...` (or `--run RUN_ID`): classify image files with a
trained network, as the exported models would: pixels in [0, 1] at the training resolution, normalised inside."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from db import open_database, resolve_url, training
from effnas.cli import CommandParser, UsageError, add_db_option, command
from effnas.records import TrainingRun, TrainingStatus

FORMATS = ("table", "json")


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m scaling.predict",
                           description="Classify image files with a trained network (from scaling.train).")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--family", type=int, metavar="ID", help="the family of --member")
    parser.add_argument("--member", metavar="NAME", help="with --family: its latest trained run of this member")
    parser.add_argument("--run", type=int, metavar="RUN_ID", help="a training run by id")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (3)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="print a table or JSON (table)")
    add_db_option(parser)
    return parser


def find_run(db, args) -> TrainingRun:
    if args.run is not None:
        if args.family is not None or args.member is not None:
            raise UsageError("give either --run RUN_ID or --family ID --member NAME")
        run = training.get_run(db, args.run)
        if run is None:
            raise UsageError(f"no training run with id {args.run}")
        if run.status is not TrainingStatus.COMPLETE:
            raise UsageError(f"training run {args.run} is {run.status}, not complete")
        return run
    if args.family is None or args.member is None:
        raise UsageError("give --family ID --member NAME (e.g. --member B0), or --run RUN_ID")
    runs = [r for r in training.list_runs(db, family_id=args.family)
            if r.status is TrainingStatus.COMPLETE and (r.member or "").upper() == args.member.upper()]
    if not runs:
        raise UsageError(f"member {args.member} of family {args.family} has no complete training run; train it with "
                         f"python -m scaling.train --family {args.family} --members {args.member}")
    return runs[-1]


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
    run = find_run(open_database(resolve_url(args.db), create=False), args)
    import torch

    from nas.training.weights import WeightsError, load_weights

    try:
        weights = load_weights(run.weights_path, run.weights_sha256)
    except WeightsError as exc:
        raise UsageError(str(exc)) from None
    spec = weights.spec
    batch = torch.stack([read_image(Path(image), spec.in_channels, spec.resolution) for image in args.images])
    with torch.no_grad():
        probabilities = weights.model()(batch).softmax(1)
    classes = weights.classes or [str(i) for i in range(probabilities.shape[1])]
    top = min(args.top, len(classes))
    results = []
    for image, row in zip(args.images, probabilities):
        values, indices = row.topk(top)
        results.append({"image": image, "predictions": [
            {"class": classes[int(i)], "label": int(i), "probability": float(v)} for v, i in zip(values, indices)]})
    if args.format == "json":
        print(json.dumps({"run_id": run.id, "network": run.label, "results": results}, indent=2))
    else:
        print(f"Run {run.id} ({run.label}, test accuracy {run.test_accuracy:.4f}):")
        for result in results:
            shown = ", ".join(f"{p['class']} {p['probability']:.3f}" for p in result["predictions"])
            print(f"{result['image']}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
