"""Data-parallel final training on the CPU: two processes over gloo against one, a rank killed mid-run, and the
same command continuing the job exactly."""

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

import psutil
import pytest

from helpers import mnist_idx, stored_runs
from nas.space.spec import decode, to_json

SMALL = decode(["r1_k3_s11_e1_i16_o16", "r1_k3_s22_e3_i16_o24_se0.25", "r1_k3_s22_e3_i24_o32"],
               stem_channels=16, head_channels=64, resolution=32, num_classes=10)

pytestmark = pytest.mark.slow


def train(folder, db, *extra, wait=True):
    command = [sys.executable, "-m", "scaling.train", "--arch", str(folder / "small.json"), "--dataset", "idx",
               "--data-dir", str(folder / "digits"), "--val-images", "300", "--batch-size", "64", "--lr", "0.2",
               "--weight-decay", "1e-4", "--db", str(db), "--out-dir", str(folder / f"runs-{db.stem}"), *extra]
    env = {**os.environ, "EFFNAS_DB": ""}
    if not wait:
        return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    mnist_idx(folder / "digits")
    (folder / "small.json").write_text(to_json(SMALL))
    return folder


def test_two_processes_reach_one_process_accuracy_and_the_run_says_how_many(folder):
    db = folder / "compare.db"
    one = train(folder, db, "--subset", "2700", "--epochs", "4", "--seeds", "0,1", "--threads", "1",
                "--format", "json")
    assert one.returncode == 0, one.stderr
    two = train(folder, db, "--subset", "2700", "--epochs", "4", "--seeds", "0,1", "--nproc", "2", "--format", "json")
    assert two.returncode == 0, two.stderr
    alone = [r["test_accuracy"] for r in json.loads(one.stdout)]
    parallel = [r["test_accuracy"] for r in json.loads(two.stdout)]
    assert min(alone + parallel) > 0.7  # chance is 0.1
    # The same global batch (64): two processes land within the seed spread of one.
    spread = max(statistics.stdev(alone), statistics.stdev(parallel), 0.02)
    assert abs(statistics.fmean(parallel) - statistics.fmean(alone)) <= 2 * spread, (alone, parallel)
    stored = stored_runs(db)
    assert [json.loads(r["data"])["processes"] for r in stored] == [1, 1, 2, 2]
    assert all(p["processes"] == 2 for r in stored[2:] for p in json.loads(r["curve"]))
    assert two.stderr.count("Training run") == 2 and "[1/2]" in two.stderr  # rank 0 alone reports


def test_a_killed_rank_ends_the_job_in_one_line_and_the_same_command_continues_it_exactly(folder):
    db = folder / "killed.db"
    job = ["--subset", "1500", "--epochs", "5", "--nproc", "2"]
    proc = train(folder, db, *job, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
        try:
            if db.exists() and stored_runs(db) and stored_runs(db)[0]["epochs_done"] >= 2:
                break
        except sqlite3.OperationalError:
            continue
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True) if "scaling.train" in " ".join(p.cmdline())]
    assert len(ranks) == 2
    ranks[-1].send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = [line for line in stderr.splitlines() if not line.startswith("[") and not line.startswith("Training run")]
    assert len(lines) == 1 and "of 2 ended with signal 9; the other ranks were stopped" in lines[0], stderr
    assert "Traceback" not in stderr
    assert not [p for p in ranks if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    [killed] = stored_runs(db)
    assert killed["status"] == "interrupted" and 2 <= killed["epochs_done"] < 5
    again = train(folder, db, *job)
    assert again.returncode == 0, again.stderr
    assert f"continuing after epoch {killed['epochs_done']}" in again.stderr
    [after] = stored_runs(db)
    assert after["id"] == killed["id"] and after["status"] == "complete"
    straight_db = folder / "straight.db"
    straight = train(folder, straight_db, *job)
    assert straight.returncode == 0, straight.stderr
    [reference] = stored_runs(straight_db)

    def trained(curve):
        return [{k: v for k, v in p.items() if k not in ("seconds", "images_per_second")} for p in json.loads(curve)]

    assert trained(after["curve"]) == trained(reference["curve"])  # killed and continued = uninterrupted
    assert after["test_accuracy"] == reference["test_accuracy"]
