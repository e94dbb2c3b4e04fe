"""Speed of the default search: wall time, trials per minute, seconds per trial split into build/train/evaluate.

Run: .venv/bin/python bench/search_speed.py [--out FILE] [extra nas.search options]
It runs `python -m nas.search --target-flops 400M` (plus any options given) into a fresh temporary database,
exactly as a user would, and reads the timings of every trial back from that database. Results go to
bench/search_speed.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_json import default_path, write_json

from db import open_database, trials
from effnas.records import TrialRole, TrialStatus
from nas.search.config import SearchConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        command = [sys.executable, "-m", "nas.search", "--target-flops", "400M", "--db", str(db), *extra]
        print("running:", " ".join(command[1:]), flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env={**os.environ})
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        stored = open_database(f"sqlite:///{db}", create=False)
        rows = trials.list_trials(stored, 1)
        stored.close()
    candidates = [r for r in rows if r.role is TrialRole.CANDIDATE]
    trained = [r for r in rows if r.status is TrialStatus.COMPLETE]
    distinct = len({r.arch_key for r in candidates})
    rejected = sum(r.status is TrialStatus.REJECTED for r in candidates)
    failed = sum(r.status is TrialStatus.FAILED for r in candidates)
    print(f"wall time of the run      : {wall:7.1f} s ({wall / 60:.2f} min)")
    print(f"candidate trials          : {len(candidates)} ({distinct} distinct architectures, {rejected} rejected, "
          f"{failed} failed) + {len(rows) - len(candidates)} reference")
    print(f"trials per minute         : {len(rows) / (wall / 60):7.2f} (all trials incl. reference)")
    per_trial = {}
    for column, name in (("build_seconds", "build"), ("train_seconds", "train"), ("eval_seconds", "evaluate")):
        values = [getattr(r, column) for r in trained]
        per_trial[name] = {"mean": statistics.mean(values), "median": statistics.median(values), "max": max(values)}
        print(f"seconds per trial, {name:8}: mean {per_trial[name]['mean']:6.2f}  median "
              f"{per_trial[name]['median']:6.2f}  max {per_trial[name]['max']:6.2f}")
    overhead = wall - sum(r.build_seconds + r.train_seconds + r.eval_seconds for r in trained)
    print(f"outside training (startup, data, strategy, database): {overhead:.1f} s")
    best = max((r for r in candidates if r.reward is not None), key=lambda r: r.reward, default=None)
    write_json(args.out, {
        "search": " ".join(["nas.search", "--target-flops", "400M", *extra]),
        "strategy": SearchConfig.strategy if "--strategy" not in extra else extra[extra.index("--strategy") + 1],
        "wall_seconds": wall,
        "candidate_trials": len(candidates),
        "distinct_architectures": distinct,
        "rejected": rejected,
        "failed": failed,
        "reference_trials": len(rows) - len(candidates),
        "trials_per_minute": len(rows) / (wall / 60),
        "seconds_per_trial": per_trial,
        "seconds_outside_training": overhead,
        "best_candidate": None if best is None else {
            "reward": best.reward, "proxy_accuracy": best.accuracy, "flops": best.flops,
            "flops_convention": "multiply-accumulates of conv and linear layers, at the search's --resolution "
                                "(224 px unless given)",
        },
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
