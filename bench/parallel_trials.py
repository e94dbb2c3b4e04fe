"""Parallel trials: the same search with --workers 1 (in-process) and --workers N (NNI trial processes).

Run: .venv/bin/python bench/parallel_trials.py [--workers 2] [--trials 16] [extra nas.search options]
Both runs use `--strategy random` with one seed, so they train the same architectures whatever order results
come back in (evolution's later proposals depend on that order). Each run gets a fresh SQLite database and is
timed from the command's start to its exit, exactly as a user would see it. Afterwards every database is checked
for lost or duplicated trial rows: one row per proposed architecture, distinct numbers, all finished.
Results go to bench/parallel_trials.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_json import default_path, write_json

from db import open_database, trials
from effnas.records import FINISHED, TrialInfo, TrialRole


def run_search(folder: Path, workers: int, count: int, extra: list[str]) -> tuple[float, list[TrialInfo]]:
    db = folder / f"workers{workers}.db"
    command = [
        sys.executable, "-m", "nas.search", "--target-flops", "400M", "--strategy", "random", "--seed", "0",
        "--trials", str(count), "--time-budget", "none", "--workers", str(workers), "--db", str(db), *extra,
    ]
    print("running:", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"nas.search --workers {workers} failed ({result.returncode}):\n{result.stderr}")
    stored = open_database(f"sqlite:///{db}", create=False)
    rows = trials.list_trials(stored, 1)
    stored.close()
    return wall, rows


def check_rows(rows: list[TrialInfo], count: int) -> str:
    """'' when the rows are whole, else what is wrong."""
    candidates = [r for r in rows if r.role is TrialRole.CANDIDATE]
    problems = []
    if len(candidates) != count:
        problems.append(f"{len(candidates)} candidate rows for {count} trials")
    if len({r.arch_key for r in candidates}) != len(candidates):
        problems.append("an architecture stored twice")
    if len({r.number for r in rows}) != len(rows):
        problems.append("a trial number used twice")
    unfinished = [r.number for r in rows if r.status not in FINISHED]
    if unfinished:
        problems.append(f"unfinished trials {unfinished}")
    return "; ".join(problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="parallel trial processes of the second run (2)")
    parser.add_argument("--trials", type=int, default=16, help="candidates per run (16)")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        serial_wall, serial_rows = run_search(folder, 1, args.trials, extra)
        parallel_wall, parallel_rows = run_search(folder, args.workers, args.trials, extra)
    print()
    print(f"{'':24}{'--workers 1':>14}{f'--workers {args.workers}':>14}")
    print(f"{'wall time (s)':24}{serial_wall:14.1f}{parallel_wall:14.1f}")
    print(f"{'trials (incl. B0)':24}{len(serial_rows):14d}{len(parallel_rows):14d}")
    means = [sum(r.train_seconds or 0 for r in rows) / max(1, sum(r.train_seconds is not None for r in rows))
             for rows in (serial_rows, parallel_rows)]
    print(f"{'train s per trial (mean)':24}{means[0]:14.2f}{means[1]:14.2f}")
    print(f"ratio: --workers {args.workers} takes {parallel_wall / serial_wall:.2f}x the wall time of --workers 1 "
          f"({serial_wall / parallel_wall:.2f}x the throughput)")
    same = {r.arch_key for r in serial_rows} == {r.arch_key for r in parallel_rows}
    print(f"same architectures trained in both runs: {'yes' if same else 'NO'}")
    problems = {}
    for label, rows in (("--workers 1", serial_rows), (f"--workers {args.workers}", parallel_rows)):
        problems[label] = check_rows(rows, args.trials)
        print(f"rows of {label}: {problems[label] or 'none lost, none duplicated, all finished'}")
    write_json(args.out, {
        "search": " ".join(["nas.search", "--target-flops", "400M", "--strategy", "random", "--seed", "0",
                            "--trials", str(args.trials), *extra]),
        "workers": args.workers,
        "wall_seconds": {"1": serial_wall, str(args.workers): parallel_wall},
        "trials_incl_reference": {"1": len(serial_rows), str(args.workers): len(parallel_rows)},
        "train_seconds_per_trial": {"1": means[0], str(args.workers): means[1]},
        "throughput_ratio": serial_wall / parallel_wall,
        "same_architectures": same,
        "row_problems": {label: problem for label, problem in problems.items() if problem},
    })
    return 1 if any(problems.values()) or not same else 0


if __name__ == "__main__":
    sys.exit(main())
