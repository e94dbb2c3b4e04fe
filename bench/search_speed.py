"""Speed of the default search: wall time, candidates weighed, and where the time goes (supernet training, scoring
on it, proxy training split into build/train/evaluate, the rest).

Run: .venv/bin/python bench/search_speed.py [--out FILE] [extra nas.search options]
It runs `python -m nas.search --target-flops 400M` (plus any options given; a target given replaces 400M; the
tutorial's Fashion-MNIST search: `--out bench/search_speed_fashion_mnist.json --dataset fashion-mnist --resolution
32 --target-flops 8M`) into a fresh temporary database, exactly as a user would, and reads the timings of every
trial back from that database. Results go to bench/search_speed.json (or --out).
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

from db import open_database, searches, supernets, trials
from effnas.records import TrialRole, TrialStatus
from nas.search.config import SearchConfig


def search_args(extra: list[str]) -> list[str]:
    """The default run's target (400M FLOPs) unless the options given name one, then the options."""
    named = any(arg.startswith(("--target-flops", "--target-latency")) for arg in extra)
    return [*([] if named else ["--target-flops", "400M"]), *extra]


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "median": statistics.median(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        command = [sys.executable, "-m", "nas.search", *search_args(extra), "--db", str(db)]
        print("running:", " ".join(command[1:]), flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env={**os.environ})
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        stored = open_database(f"sqlite:///{db}", create=False)
        rows = trials.list_trials(stored, 1)
        config = SearchConfig.from_config(searches.get_search(stored, 1).config)
        supernet = supernets.get_supernet(stored, 1)
        stored.close()
    candidates = [r for r in rows if r.role is TrialRole.CANDIDATE]
    complete = [r for r in rows if r.status is TrialStatus.COMPLETE]
    # A candidate the supernet scored and nothing else is a partial trial of 0 proxy epochs.
    scored_only = [r for r in complete if r.partial and r.epochs == 0]
    trained = [r for r in complete if not (r.partial and r.epochs == 0)]
    distinct = len({r.arch_key for r in candidates})
    rejected = sum(r.status is TrialStatus.REJECTED for r in candidates)
    failed = sum(r.status is TrialStatus.FAILED for r in candidates)
    supernet_seconds = 0.0 if supernet is None else supernet.seconds or 0.0
    print(f"wall time of the run      : {wall:7.1f} s ({wall / 60:.2f} min), evaluator {config.evaluator}")
    print(f"candidate trials          : {len(candidates)} ({distinct} distinct architectures, {rejected} rejected, "
          f"{failed} failed) + {len(rows) - len(candidates)} reference")
    print(f"trials per minute         : {len(rows) / (wall / 60):7.2f} (all trials incl. reference)")
    per_trial = {}
    for column, name in (("build_seconds", "build"), ("train_seconds", "train"), ("eval_seconds", "evaluate")):
        per_trial[name] = spread([getattr(r, column) for r in trained])
        print(f"seconds per proxy-trained trial, {name:8}: mean {per_trial[name]['mean']:6.2f}  median "
              f"{per_trial[name]['median']:6.2f}  max {per_trial[name]['max']:6.2f}")
    scoring = spread([r.eval_seconds for r in scored_only]) if scored_only else None
    if scoring:
        print(f"supernet training         : {supernet_seconds:7.1f} s; seconds per candidate scored on it: mean "
              f"{scoring['mean']:.2f}  median {scoring['median']:.2f}  max {scoring['max']:.2f}")
    spent = {"supernet training": supernet_seconds,
             "scoring on the supernet": sum(r.eval_seconds for r in scored_only),
             "proxy training (reference included)": sum(r.build_seconds + r.train_seconds + r.eval_seconds
                                                        for r in trained)}
    spent["outside these (startup, data, strategy, database)"] = wall - sum(spent.values())
    for what, seconds in spent.items():
        print(f"{what:52}: {seconds:7.1f} s")
    # The search's own rule: only a candidate trained on the whole proxy can win.
    best = max((r for r in trained if r.role is TrialRole.CANDIDATE and not r.partial), key=lambda r: r.reward,
               default=None)
    write_json(args.out, {
        "search": " ".join(["nas.search", *search_args(extra)]),
        "strategy": config.strategy,
        "evaluator": config.evaluator,
        "wall_seconds": wall,
        "candidate_trials": len(candidates),
        "distinct_architectures": distinct,
        "rejected": rejected,
        "failed": failed,
        "reference_trials": len(rows) - len(candidates),
        "scored_on_the_supernet": len(scored_only),
        "proxy_trained_candidates": sum(r.role is TrialRole.CANDIDATE for r in trained),
        "trials_per_minute": len(rows) / (wall / 60),
        "seconds_per_trial": per_trial,
        "seconds_per_supernet_score": scoring,
        "seconds_spent": spent,
        "best_candidate": None if best is None else {
            "reward": best.reward, "proxy_accuracy": best.accuracy, "flops": best.flops,
            "flops_convention": "multiply-accumulates of conv and linear layers, at the search's --resolution "
                                "(224 px unless given)",
        },
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
