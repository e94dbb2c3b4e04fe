"""The found B0 against EfficientNet-B0, both trained to the end on Fashion-MNIST with the same recipe.

Run: .venv/bin/python bench/final_training.py [--epochs 30] [--trials 40] [--stem-stride auto] [--weight-decay W]
     [--subset N] [--keep-baseline] [--resume]
1. `python -m nas.search --dataset fashion-mnist --resolution 32 --target-flops 8M` (stem stride auto: 1) finds a B0 (the
   search reads only Fashion-MNIST's 60k training images; a stride-1 stem keeps a 2x2 map before the head at
   32 px, where B0's own stem leaves 1x1);
2. `python -m scaling.train --search 1` trains it from scratch (55k train / 5k validation), tests it on t10k;
3. `python -m scaling.train --baseline efficientnet-b0 --resolution 32` trains EfficientNet-B0 the same way.
It prints test accuracy, params, FLOPs at 32 px, training time and images/s of each, checks the targets (found B0:
>= 0.94 test accuracy on CPU / 0.95 on a GPU, <= 1M params, at least EfficientNet-B0's accuracy at fewer FLOPs),
and writes everything to bench/final_training.json (or --out). Each step is an effnas command, as a user runs it,
into a fresh database (--db, replaced at the start unless --resume keeps it).

A 30-epoch training of a large winner can outlast a session on 2 cores: stop the bench with Ctrl-C after an epoch,
then `--save-partial --commit` copies the database and the stopped run's checkpoint into
bench/final_training_partial/ (see bench/partial_runs.py); `--resume` on a fresh clone puts them back and
`scaling.train` continues the run after its last epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import partial_runs
from bench_json import default_path, machine_description, read_json, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_FLOPS = 8e6


def run(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run an effnas command; its progress (stderr) goes on to this bench's stderr as it comes, so that a log of
    an hours-long training shows where it is."""
    print("running: python -m", " ".join(args), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE,
                                   text=True, env={**os.environ, "EFFNAS_DB": ""})
        lines = []
        for line in process.stderr:
            sys.stderr.write(line)
            lines.append(line)
        process.wait()
        stdout.seek(0)
        result = subprocess.CompletedProcess(args, process.returncode, stdout.read(), "".join(lines))
    if result.returncode == partial_runs.INTERRUPTED:
        raise KeyboardInterrupt  # the command saved its state on Ctrl-C, whether or not this process saw it
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result, time.perf_counter() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of both networks (30)")
    parser.add_argument("--trials", type=int, default=40, help="search trials (40)")
    parser.add_argument("--time-budget", default="9m", help="search time budget (9m)")
    parser.add_argument("--stem-stride", default="auto", choices=("auto", "1", "2"),
                        help="stem stride of the search (auto: 1 at 32 px)")
    parser.add_argument("--weight-decay", help="scaling.train's --weight-decay for both networks (its default)")
    parser.add_argument("--subset", type=int, default=None, help="train on only this many images (a quick check)")
    parser.add_argument("--val-images", type=int, default=None,
                        help="validation images held out of the training files (scaling.train's default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--data-dir", help="IDX files to search and train on instead of Fashion-MNIST (the bench's "
                        "own tests)")
    parser.add_argument("--keep-baseline", action="store_true",
                        help="take EfficientNet-B0's result from --out when it was trained with the same recipe, "
                             "epochs, subset and device (it does not depend on the search), instead of training it")
    parser.add_argument("--resume", action="store_true",
                        help="keep --db from an earlier run of this bench: a finished search is not run again, and "
                             "scaling.train continues an interrupted training from its last epoch (so the hours of "
                             "training on a CPU can span sessions on one machine)")
    parser.add_argument("--save-partial", action="store_true",
                        help="copy the database and the checkpoint of a run stopped half-way into a folder beside "
                        "--out, for --resume on a fresh clone (with --commit, commit it); train nothing")
    parser.add_argument("--commit", action="store_true", help="with --save-partial: git-commit the folder")
    parser.add_argument("--db", default=str(HERE / "out" / "final_training.db"), help="database of the runs")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    return parser.parse_args()


def data_description(args: argparse.Namespace) -> str:
    if args.data_dir:
        return f"the IDX files in {Path(args.data_dir).name}"
    return "Fashion-MNIST, 55k train / 5k validation (from the training files) / 10k test"


def data_args(args: argparse.Namespace) -> list[str]:
    return (["--dataset", "idx", "--data-dir", str(Path(args.data_dir).resolve())] if args.data_dir
            else ["--dataset", "fashion-mnist"])


def training_args(args: argparse.Namespace, folder: Path, db: list[str]) -> list[str]:
    """scaling.train's options shared by both networks: one recipe for both."""
    common = [*data_args(args), "--epochs", str(args.epochs), "--device", args.device, "--format", "json",
              *db, "--out-dir", str(folder / "runs")]
    if args.subset:
        common += ["--subset", str(args.subset)]
    if args.val_images:
        common += ["--val-images", str(args.val_images)]
    if args.weight_decay:
        common += ["--weight-decay", args.weight_decay]
    return common


def train(args: list[str], folder: Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """One scaling.train run's JSON record, with its wall time and mean training throughput. A --resume that finds
    the run complete trains nothing: the wall time and throughput of `previous` (this run's earlier record) stay."""
    result, seconds = run(["scaling.train", *args], folder)
    [entry] = json.loads(result.stdout)
    if "nothing left to train" in result.stderr and previous and previous.get("weights_sha256") == entry.get(
            "weights_sha256"):
        return {**entry, **{key: previous[key] for key in ("wall_seconds", "images_per_second", "device",
                                                           "weights_path")}}
    entry["wall_seconds"] = seconds
    # Committed results name files relative to the repository, not where this machine keeps it.
    weights = Path(entry["weights_path"])
    entry["weights_path"] = weights.relative_to(REPO).as_posix() if weights.is_relative_to(REPO) else str(weights)
    rates = [float(line.split(" images/s")[0].rsplit(" ", 1)[1]) for line in result.stderr.splitlines()
             if " images/s" in line]
    entry["images_per_second"] = sum(rates) / len(rates) if rates else None
    entry["device"] = "cuda" if "cuda" in (result.stderr.splitlines()[0] if result.stderr else "") else "cpu"
    return entry


def kept_baseline(args: argparse.Namespace) -> dict[str, Any] | None:
    """EfficientNet-B0's entry from the previous results, if trained the way this run would train it."""
    path = Path(args.out)
    if not args.keep_baseline or not path.exists():
        return None
    previous = read_json(path)
    setup, b0 = previous["setup"], previous["efficientnet_b0"]
    same = (setup["epochs"] == args.epochs and setup["subset"] == args.subset and setup["data"] == data_description(args)
            and (args.weight_decay is None or float(args.weight_decay) == b0["recipe"]["weight_decay"])
            and args.device in ("auto", setup["device"]))
    if not same:
        print("--keep-baseline: the previous EfficientNet-B0 was trained differently; training it again", flush=True)
        return None
    print(f"--keep-baseline: EfficientNet-B0 from {path.name} ({previous['date']}, commit {previous['commit']})",
          flush=True)
    return {**b0, "measured": b0.get("measured") or {"date": previous["date"], "commit": previous["commit"]}}


def finished_search_seconds(db_path: Path) -> float | None:
    """How long search 1 of an earlier run of this bench took, if it finished."""
    from db import open_database
    from db.searches import get_search
    from effnas.records import SearchStatus

    if not db_path.is_file():
        return None
    search = get_search(open_database(f"sqlite:///{db_path}", create=False), 1)
    if search is None or search.status is not SearchStatus.FINISHED:
        return None
    return (search.finished_at - search.started_at).total_seconds()


def search_record(db_path: Path, target_flops: float) -> dict[str, Any]:
    """What search 1 did, for the results page: candidates by status, the reward winner's proxy figures and the most
    accurate candidate within the target (the summary's other answer, `--pick accuracy`)."""
    from db import open_database
    from db.trials import best_trial, candidate_status_counts, most_accurate_within

    db = open_database(f"sqlite:///{db_path}", create=False)
    counts = {status.value: count for status, count in candidate_status_counts(db, 1).items()}

    def figures(trial: Any) -> dict[str, Any] | None:
        return None if trial is None else {"flops": trial.flops, "proxy_accuracy": trial.accuracy,
                                           "reward": trial.reward}

    return {"candidates": counts, "target_flops": target_flops, "winner": figures(best_trial(db, 1)),
            "most_accurate_within_target": figures(most_accurate_within(db, 1, target_flops))}


def report(found: dict[str, Any], b0: dict[str, Any], search_seconds: float, checks: dict[str, bool], out: str) -> None:
    print(f"\n{'':22}{'found B0':>14}{'EfficientNet-B0':>18}")
    for label, key, fmt in (("test accuracy", "test_accuracy", "{:.4f}"), ("params", "params", "{:,}"),
                            ("FLOPs at 32 px", "flops", "{:,}"), ("training time (s)", "seconds", "{:.0f}"),
                            ("images/s (training)", "images_per_second", "{:.0f}")):
        print(f"{label:22}{fmt.format(found[key]):>14}{fmt.format(b0[key]):>18}")
    print(f"search: {search_seconds:.0f} s")
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'MISS'}  {check}")
    print(f"results: {out}")


def save_partial(db_path: Path, partial: Path, commit: bool) -> int:
    """Carry the stopped run to a fresh clone; with none stopped, remove the folder."""
    carried = partial_runs.save(db_path, db_path.parent / "runs", partial) if db_path.is_file() else []
    for stopped in carried:
        print(f"carried {partial_runs.describe(stopped)} in {partial.name}", flush=True)
    if not carried:
        print("nothing to carry: no run stopped half-way", flush=True)
    if commit:
        subprocess.run(["git", "add", "-A", "-f", "--", str(partial)], cwd=REPO, check=False, stderr=subprocess.DEVNULL)
        subprocess.run(["git", "commit", "-q", "-m", f"bench/final_training: {len(carried)} stopped runs carried",
                        "--", str(partial)], cwd=REPO, check=False, stderr=subprocess.DEVNULL)
    return 0


def main() -> int:
    args = parse_args()
    db_path = Path(args.db).resolve()
    partial = Path(args.out).with_name(f"{Path(args.out).stem}_partial")
    if args.save_partial:
        return save_partial(db_path, partial, args.commit)
    baseline = kept_baseline(args)
    folder = db_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if args.resume:
        for stopped in partial_runs.restore(db_path, folder / "runs", partial):
            print(f"continuing {partial_runs.describe(stopped)} from {partial.name}", flush=True)
    search_seconds = finished_search_seconds(db_path) if args.resume else None
    if not args.resume:
        for stale in folder.glob(db_path.name + "*"):
            stale.unlink()
    db = ["--db", str(db_path)]
    search_args = ["nas.search", *data_args(args), "--resolution", "32", "--target-flops",
                   f"{TARGET_FLOPS / 1e6:g}M",
                   "--stem-stride", args.stem_stride, "--trials", str(args.trials), "--time-budget", args.time_budget,
                   "--device", args.device, *db]
    if search_seconds is None:
        _, search_seconds = run(search_args, folder)
    else:
        print(f"--resume: search 1 in {db_path.name} finished ({search_seconds:.0f} s); not run again", flush=True)
    common = training_args(args, folder, db)
    previous = read_json(Path(args.out)).get("found_b0") if args.resume and Path(args.out).exists() else None
    found = train(["--search", "1", *common], folder, previous)
    b0 = baseline or train(["--baseline", "efficientnet-b0", "--resolution", "32", *common], folder)
    gpu = found["device"] == "cuda"
    target_accuracy = 0.95 if gpu else 0.94
    checks = {
        f"found B0 test accuracy >= {target_accuracy}": found["test_accuracy"] >= target_accuracy,
        "found B0 params <= 1M": found["params"] <= 1_000_000,
        "found B0 accuracy >= EfficientNet-B0's": found["test_accuracy"] >= b0["test_accuracy"],
        "found B0 FLOPs < EfficientNet-B0's": found["flops"] < b0["flops"],
        # The run's own training seconds, summed over every process that trained it (a carried run has several).
        "found B0 trained within 60 minutes": found["seconds"] <= 3600,
    }
    results = {
        "setup": {"data": data_description(args),
                  "search": " ".join(search_args[:-2]), "epochs": args.epochs, "subset": args.subset,
                  "device": found["device"], "machine": machine_description(),
                  "flops": "multiply-accumulates of conv and linear layers at 32x32"},
        "search_seconds": search_seconds, "search": search_record(db_path, TARGET_FLOPS), "found_b0": found, "efficientnet_b0": b0, "checks": checks,
    }
    write_json(args.out, results)
    report(found, b0, search_seconds, checks, args.out)
    return 0


if __name__ == "__main__":
    partial_runs.exit_with(main, "--resume continues the training from its last epoch")
