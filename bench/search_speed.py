"""Speed of the default search: wall time, trials per minute, seconds per trial split into build/train/evaluate.

Run: .venv/bin/python bench/search_speed.py [extra nas.search options]
It runs `python -m nas.search --target-flops 400M` (plus any options given) into a fresh temporary database,
exactly as a user would, and reads the timings of every trial back from that database.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from db import TrialRole, TrialStatus, open_database, trials


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        command = [sys.executable, "-m", "nas.search", "--target-flops", "400M", "--db", str(db), *sys.argv[1:]]
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
    print(f"wall time of the run      : {wall:7.1f} s ({wall / 60:.2f} min)")
    print(f"candidate trials          : {len(candidates)} ({distinct} distinct architectures, "
          f"{sum(r.status is TrialStatus.REJECTED for r in candidates)} rejected, "
          f"{sum(r.status is TrialStatus.FAILED for r in candidates)} failed)"
          f" + {len(rows) - len(candidates)} reference")
    print(f"trials per minute         : {len(rows) / (wall / 60):7.2f} (all trials incl. reference)")
    for column, name in (("build_seconds", "build"), ("train_seconds", "train"), ("eval_seconds", "evaluate")):
        values = [getattr(r, column) for r in trained]
        print(f"seconds per trial, {name:8}: mean {statistics.mean(values):6.2f}  median "
              f"{statistics.median(values):6.2f}  max {max(values):6.2f}")
    overhead = wall - sum(r.build_seconds + r.train_seconds + r.eval_seconds for r in trained)
    print(f"outside training (startup, data, strategy, database): {overhead:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
