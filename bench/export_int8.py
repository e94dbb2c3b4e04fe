"""A trained Fashion-MNIST family exported with int8: float against int8 test accuracy and size per member.

Run: .venv/bin/python bench/export_int8.py [--phi-max 1] [--epochs 5] [--subset 10000]
Grows the found B0 of bench/final_training.json (its block strings at 32 px, stem stride 1) into B0..B{phi-max}
(`scaling.grow --arch`, paper coefficients), trains every member once (`scaling.train`, seed 0, --subset training
images, the full 10k test split), and exports the family with `scaling.export --quantize int8`.
Each step is an effnas command, as a user runs it. It reports, per member, the float ONNX model's and the int8
model's test accuracy (the same 10k test images), their sizes, and the export folder's listing; results go to
bench/export_int8.json (or --out). About 15 minutes on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench_json import default_path, read_json, write_json
from final_training import run

from nas.space.flops import count_flops, count_params
from nas.space.spec import ArchSpec, decode, to_json

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phi-max", type=int, default=1, help="last member (1: B0 and B1)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per member (5)")
    parser.add_argument("--subset", type=int, default=10000, help="training images (10000)")
    parser.add_argument("--work", default=str(HERE / "out" / "export_int8"), help="scratch folder (replaced)")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    return parser.parse_args()


def found_b0() -> ArchSpec:
    """The headline search's B0 as bench/final_training.py trained it (checked against its params and FLOPs)."""
    found = read_json(default_path("final_training.py"))["found_b0"]
    spec = decode(found["block_strings"].split(), resolution=32, num_classes=10, in_channels=1, stem_stride=1)
    if (count_params(spec), count_flops(spec)) != (found["params"], found["flops"]):
        raise SystemExit("bench/final_training.json's found B0 does not decode to its own params and FLOPs")
    return spec


def member_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for member in manifest["members"]:
        int8 = member.get("int8") or {}
        rows.append({"member": member["name"], "flops": member["flops"], "params": member["params"],
                     "resolution": member["resolution"], "run_test_accuracy": member["test_accuracy"],
                     "float_test_accuracy": int8.get("float_test_accuracy"), "int8_test_accuracy": int8.get("test_accuracy"),
                     "float_bytes": int8.get("float_bytes"), "int8_bytes": int8.get("bytes"),
                     "test_images": int8.get("test_images")})
    return rows


def main() -> int:
    args = parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db = work / "family.db"
    arch = work / "found-b0.json"
    arch.write_text(to_json(found_b0()))
    seconds = {}
    grown, seconds["grow"] = run(["scaling.grow", "--arch", str(arch), "--phi-max", str(args.phi_max), "--format",
                                  "json", "--db", str(db)], work)
    family = json.loads(grown.stdout)["family_id"]
    _, seconds["train"] = run(["scaling.train", "--family", str(family), "--dataset", "fashion-mnist", "--epochs",
                               str(args.epochs), "--subset", str(args.subset), "--db", str(db), "--out-dir",
                               str(work / "runs")], work)
    folder = work / "family"
    _, seconds["export"] = run(["scaling.export", "--family", str(family), "--out", str(folder), "--quantize",
                                "int8", "--db", str(db)], work)
    manifest = json.loads((folder / "family.json").read_text())
    rows = member_rows(manifest)
    listing = {path.name: path.stat().st_size for path in sorted(folder.iterdir())}
    write_json(args.out, {"setup": {"network": "found B0 of bench/final_training.json", "phi_max": args.phi_max, "epochs": args.epochs,
                                    "subset": args.subset, "seed": 0, "data": "Fashion-MNIST, 10k test images",
                                    "flops": "multiply-accumulates of conv and linear layers, at each member's "
                                             "resolution"},
                          "members": rows, "listing": listing, "seconds": seconds,
                          "card": (folder / "README.md").read_text()})
    print(f"\n{'member':8}{'float acc':>11}{'int8 acc':>10}{'float MB':>10}{'int8 MB':>9}")
    for row in rows:
        print(f"{row['member']:8}{row['float_test_accuracy']:>11.4f}{row['int8_test_accuracy']:>10.4f}"
              f"{row['float_bytes'] / 1e6:>10.2f}{row['int8_bytes'] / 1e6:>9.2f}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
