"""Data-parallel training against one process: images/s and time to a fixed validation accuracy.

Run: .venv/bin/python bench/distributed_training.py [--epochs 6] [--subset 6000] [--target 0.7] [--device cpu|cuda]

Each case is `python -m scaling.train --baseline efficientnet-b0 --resolution 32` on Fashion-MNIST (the given number
of training images, 2,000 validation images, the final recipe, global batch 128, seed 0), as a user runs it:
- on the CPU: 1 process x all cores as threads against N processes x 1 thread (`--nproc N`, N = the cores);
- on a GPU machine (`--device cuda`): 1 GPU against all of its GPUs (one process each), with the scaling
  efficiency (images/s of N over N x images/s of 1).
Time to accuracy is the training time until the first epoch whose validation accuracy (raw or EMA weights)
reaches --target (0.7: both cases reach it in 6 epochs; 0.8 neither). Finished cases are kept in
bench/distributed_training.json and skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_json import default_path, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


def cases(device: str) -> dict[str, list[str]]:
    if device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        return {"1 GPU": ["--device", "cuda"], f"{gpus} GPUs": ["--device", "cuda", "--nproc", str(gpus)]}
    cores = os.cpu_count() or 1
    return {f"1 process x {cores} threads": ["--device", "cpu", "--threads", str(cores)],
            f"{cores} processes x 1 thread": ["--device", "cpu", "--threads", "1", "--nproc", str(cores)]}


def measure(name: str, extra: list[str], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from db import open_database, training

    db = folder / f"{name.replace(' ', '_')}.db"
    for stale in folder.glob(db.name + "*"):
        stale.unlink()
    command = [sys.executable, "-m", "scaling.train", "--baseline", "efficientnet-b0", "--resolution", "32",
               "--dataset", "fashion-mnist", "--subset", str(args.subset), "--val-images", "2000", "--epochs",
               str(args.epochs), "--format", "json", "--db", f"sqlite:///{db}", "--out-dir", str(folder / "runs"),
               *extra]
    print("running:", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, cwd=folder, stdout=subprocess.PIPE, text=True, env={**os.environ, "EFFNAS_DB": ""})
    if result.returncode != 0:
        raise SystemExit(f"{name} failed ({result.returncode})")
    [run] = json.loads(result.stdout)
    curve = training.get_run(open_database(f"sqlite:///{db}", create=False), run["run_id"]).curve
    return {"processes": curve[0].get("processes", 1), "images_per_second": sum(p["images_per_second"] for p in curve)
            / len(curve), "train_seconds": sum(p["seconds"] for p in curve), "test_accuracy": run["test_accuracy"],
            "val_accuracy": run["val_accuracy"], "curve": curve}


def seconds_to(curve: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds until the end of the first epoch whose validation accuracy (raw or EMA) reaches `target`."""
    elapsed = 0.0
    for point in curve:
        elapsed += point["seconds"]
        if max(point["val_accuracy"], point["val_accuracy_ema"] or 0) >= target:
            return elapsed
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=6000)
    parser.add_argument("--target", type=float, default=0.7,
                        help="validation accuracy to reach (0.7); computed from the stored curves, so a new target "
                             "needs no new training")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=str(default_path(__file__)))
    args = parser.parse_args()
    folder = HERE / "out" / "distributed_training"
    folder.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    setup = {"network": "efficientnet-b0 at 32 px (8.3M FLOPs, multiply-accumulates of conv and linear layers)",
             "data": f"Fashion-MNIST, {args.subset} training images, 2,000 validation", "epochs": args.epochs,
             "global_batch": 128, "device": args.device}
    if results.get("setup") != setup:
        results = {"setup": setup, "cases": {}}
    for name, extra in cases(args.device).items():
        if name not in results["cases"]:
            results["cases"][name] = measure(name, extra, args, folder)
            write_json(out, {k: v for k, v in results.items() if k not in ("command", "date", "machine")})
    results["target_val_accuracy"] = args.target
    for case in results["cases"].values():
        case["seconds_to_target"] = seconds_to(case["curve"], args.target)
    one, many = results["cases"].values()
    results["speedup"] = many["images_per_second"] / one["images_per_second"]
    results["scaling_efficiency"] = results["speedup"] / many["processes"]
    write_json(out, {k: v for k, v in results.items() if k not in ("command", "date", "machine")})
    for name, case in results["cases"].items():
        reached = f"{case['seconds_to_target']:.0f} s" if case["seconds_to_target"] is not None else "not reached"
        print(f"{name:28} {case['images_per_second']:7.0f} images/s   to {args.target}: {reached:>12}   "
              f"test {case['test_accuracy']:.4f}")
    print(f"speedup {results['speedup']:.2f}, scaling efficiency {results['scaling_efficiency']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
