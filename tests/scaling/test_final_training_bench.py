"""bench/final_training.py, the headline bench: a training stopped half-way is carried to a fresh clone, where
--resume keeps the finished search and continues the run after its last epoch instead of training it again."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import mnist_idx

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "final_training.py"


def bench(*args, cwd):
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EFFNAS_DB": ""})


def epochs_done(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return max((n for (n,) in c.execute("select epochs_done from training_runs")), default=0)
    except sqlite3.OperationalError:  # not created yet, or busy
        return 0


@pytest.mark.slow
def test_a_stopped_final_training_is_carried_to_a_fresh_clone_and_continued_after_its_epoch(tmp_path):
    digits = mnist_idx(tmp_path / "digits", train=600, test=200)
    work, out = tmp_path / "work", tmp_path / "final.json"
    command = ["--data-dir", str(digits), "--trials", "2", "--time-budget", "10m", "--epochs", "3", "--subset", "300",
               "--val-images", "100", "--device", "cpu", "--db", str(work / "final.db"), "--out", str(out)]

    # Stopped with Ctrl-C once the found B0's run has stored its first of three epochs, as a session ends.
    log = tmp_path / "stopped.log"
    with log.open("w") as stderr:  # a file: the bench passes on every progress line of its commands
        stopped = subprocess.Popen([sys.executable, str(BENCH), *command], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=stderr, text=True, start_new_session=True, env={**os.environ, "EFFNAS_DB": ""})
    deadline = time.monotonic() + 300
    while epochs_done(work / "final.db") < 1 and stopped.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(stopped.pid, signal.SIGINT)
    stopped.wait(timeout=120)
    stderr = log.read_text()
    assert "epoch 1/3" in stderr  # the training's progress reached the bench's log as it went
    assert stopped.returncode == 130 and "Traceback" not in stderr and "--save-partial" in stderr, stderr[-2000:]
    saved = bench(*command, "--save-partial", cwd=tmp_path)
    assert saved.returncode == 0 and "after epoch" in saved.stdout, saved.stdout + saved.stderr[-2000:]
    partial = tmp_path / "final_partial"
    assert (partial / "final.db").is_file() and list(partial.glob("runs/run-*/checkpoint.pt"))
    with sqlite3.connect(partial / "final.db") as c:
        [(carried_curve,)] = c.execute("select curve from training_runs where status != 'complete'").fetchall()
        searched = c.execute("select count(*) from trials").fetchone()[0]

    carried = json.loads(carried_curve)
    assert 1 <= len(carried) < 3

    # A fresh clone has no work dir: --resume puts the run back, keeps the search and continues after its epoch.
    shutil.rmtree(work)
    resumed = bench(*command, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing run 1" in resumed.stdout and "not run again" in resumed.stdout
    assert "running: python -m nas.search" not in resumed.stdout
    with sqlite3.connect(work / "final.db") as c:
        assert c.execute("select count(*) from trials").fetchone()[0] == searched
        runs = c.execute("select id, status, curve from training_runs order by id").fetchall()
    assert [(run_id, status) for run_id, status, _ in runs] == [(1, "complete"), (2, "complete")]
    assert json.loads(runs[0][2])[:len(carried)] == carried and len(json.loads(runs[0][2])) == 3
    results = json.loads(out.read_text())
    assert results["found_b0"]["run_id"] == 1 and results["efficientnet_b0"]["label"] == "efficientnet-b0"
    assert 0 <= results["found_b0"]["test_accuracy"] <= 1
