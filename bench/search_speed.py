"""Speed of the default search: wall time, trials per minute, seconds per trial split into build/train/evaluate.

Run: .venv/bin/python bench/search_speed.py [extra nas.search options]
It runs `python -m nas.search --target-flops 400M` (plus any options given) into a fresh temporary database,
exactly as a user would, and reads the timings of every trial back from that database.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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
        with sqlite3.connect(db) as connection:
            rows = connection.execute(
                "select role, status, arch_key, build_seconds, train_seconds, eval_seconds from trials"
            ).fetchall()
    candidates = [r for r in rows if r[0] == "candidate"]
    trained = [r for r in rows if r[1] == "complete"]
    distinct = len({r[2] for r in candidates})
    print(f"wall time of the run      : {wall:7.1f} s ({wall / 60:.2f} min)")
    print(f"candidate trials          : {len(candidates)} ({distinct} distinct architectures, "
          f"{sum(r[1] == 'rejected' for r in candidates)} rejected, {sum(r[1] == 'failed' for r in candidates)} failed)"
          f" + {len(rows) - len(candidates)} reference")
    print(f"trials per minute         : {len(rows) / (wall / 60):7.2f} (all trials incl. reference)")
    for index, name in ((3, "build"), (4, "train"), (5, "evaluate")):
        values = [r[index] for r in trained]
        print(f"seconds per trial, {name:8}: mean {statistics.mean(values):6.2f}  median "
              f"{statistics.median(values):6.2f}  max {max(values):6.2f}")
    overhead = wall - sum(r[3] + r[4] + r[5] for r in trained)
    print(f"outside training (startup, data, strategy, database): {overhead:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
