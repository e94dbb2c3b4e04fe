"""bench/family_scaling.py, the bench behind scaling.grow's default rule: its runs go concurrently (its GPU mode,
here on the CPU with a tiny budget), each is stored once, and a rerun restores them from the JSON and trains
nothing again."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mnist_idx

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "family_scaling.py"


def bench(*args, cwd):
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EFFNAS_DB": ""})


@pytest.mark.slow
def test_the_bench_trains_its_runs_at_once_stores_each_once_and_a_rerun_trains_nothing(tmp_path):
    # The found B0 from the committed results, so that the bench grows its family without searching.
    found = json.loads((REPO / "bench" / "family_scaling.json").read_text())["found_b0"]
    out = tmp_path / "family.json"
    out.write_text(json.dumps({"found_b0": found}))
    digits = mnist_idx(tmp_path / "digits", train=600, test=200)
    command = ["--plan", "full", "--budget", "tiny", "--networks", "found-paper/B0", "--concurrent", "2",
               "--device", "cpu", "--data-dir", str(digits), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    first = bench(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "estimate:" in first.stdout and "3 runs, 2 at a time on cpu" in first.stdout
    entry = json.loads(out.read_text())["networks"]["found-paper/B0/tiny"]
    assert sorted(entry["test_accuracy"]) == ["0", "1", "2"]
    # Two runs were in flight together: the first two started before either ended.
    (start0, end0), (start1, end1) = sorted(entry["wall"].values())[:2]
    assert start1 < end0
    with sqlite3.connect(tmp_path / "work" / "family_scaling.db") as c:
        stored = c.execute("select json_extract(recipe, '$.seed'), status from training_runs").fetchall()
    assert sorted(stored) == [(0, "complete"), (1, "complete"), (2, "complete")]

    again = bench(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "scaling.train" not in again.stdout
    assert json.loads(out.read_text())["networks"] == {"found-paper/B0/tiny": entry}
    with sqlite3.connect(tmp_path / "work" / "family_scaling.db") as c:
        assert c.execute("select count(*) from training_runs").fetchone()[0] == 3
