"""bench/family_scaling.py, the bench behind scaling.grow's default rule: its runs go concurrently (its GPU mode,
here on the CPU with a tiny budget), each is stored once, a run stopped half-way is carried to a fresh clone and
continued there, and a rerun restores finished runs from the JSON and trains nothing again."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mnist_idx

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "family_scaling.py"
sys.path.insert(0, str(BENCH.parent))
from family_scaling import thin_margin, third_seed_rules  # noqa: E402  (a script folder, not a package)


def bench(*args, cwd):
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EFFNAS_DB": ""})


@pytest.mark.slow
def test_the_bench_trains_runs_at_once_carries_a_stopped_run_to_a_fresh_clone_and_trains_nothing_twice(tmp_path):
    # The found B0 from the committed results, so that the bench grows its family without searching.
    found = json.loads((REPO / "bench" / "family_scaling.json").read_text())["found_b0"]
    out = tmp_path / "family.json"
    out.write_text(json.dumps({"found_b0": found}))
    digits = mnist_idx(tmp_path / "digits", train=600, test=200)
    work = tmp_path / "work"
    command = ["--plan", "full", "--budget", "tiny", "--networks", "found-paper/B0", "--concurrent", "2",
               "--device", "cpu", "--data-dir", str(digits), "--out", str(out), "--work-dir", str(work)]

    # Stopped with Ctrl-C once a run has stored its first of two epochs, as a session ends.
    stopped = subprocess.Popen([sys.executable, str(BENCH), *command], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "EFFNAS_DB": ""})
    for line in stopped.stderr:
        if "epoch 1/2, loss" in line:
            os.killpg(stopped.pid, signal.SIGINT)
            break
    stopped.communicate(timeout=120)
    saved = bench(*command, "--save-partial", cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr[-2000:]
    assert "after epoch 1" in saved.stdout
    partial = tmp_path / "family_partial"
    assert (partial / "family_scaling.db").is_file() and list(partial.glob("runs/run-*/checkpoint.pt"))
    with sqlite3.connect(partial / "family_scaling.db") as c:
        carried = dict(c.execute("select json_extract(recipe, '$.seed'), curve from training_runs "
                                 "where status != 'complete' and epochs_done = 1").fetchall())

    # A fresh clone has no work dir: the bench puts the carried runs back and continues them after their epoch.
    shutil.rmtree(work)
    first = bench(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "continuing run" in first.stdout and "continuing after epoch 1" in first.stderr
    entry = json.loads(out.read_text())["networks"]["found-paper/B0/tiny"]
    assert sorted(entry["test_accuracy"]) == ["0", "1", "2"]
    # Two runs were in flight together: the first two started before either ended.
    (start0, end0), (start1, end1) = sorted(entry["wall"].values())[:2]
    assert start1 < end0
    with sqlite3.connect(work / "family_scaling.db") as c:
        stored = c.execute("select json_extract(recipe, '$.seed'), status, curve from training_runs").fetchall()
    assert sorted((seed, status) for seed, status, _ in stored) == [(0, "complete"), (1, "complete"), (2, "complete")]
    for seed, _, curve in stored:
        if seed in carried:  # the carried epoch is kept, not trained again
            assert json.loads(curve)[:1] == json.loads(carried[seed]) and len(json.loads(curve)) == 2

    again = bench(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "scaling.train" not in again.stdout
    assert json.loads(out.read_text())["networks"] == {"found-paper/B0/tiny": entry}
    with sqlite3.connect(work / "family_scaling.db") as c:
        assert c.execute("select count(*) from training_runs").fetchone()[0] == 3
    # Nothing is stopped any more: the carried folder goes.
    done = bench(*command, "--save-partial", cwd=tmp_path)
    assert "nothing to carry" in done.stdout and not partial.exists()


def seeds(*accuracies):
    return {"test_accuracy": {str(seed): accuracy for seed, accuracy in enumerate(accuracies)}}


def test_a_win_by_less_than_twice_the_spread_is_thin_and_gets_a_third_seed():
    """The medium budget's first figures: the paper's B2 over width's by 0.0044, width's sd 0.0044."""
    paper, width = seeds(0.9241, 0.9245), seeds(0.9168, 0.9230)
    assert thin_margin(paper, width)
    assert not thin_margin(width, paper)  # no win at all
    assert not thin_margin(seeds(0.9400, 0.9410), width)  # a win by far more than twice the spread


def test_the_best_b2_and_every_b2_it_beats_thinly_get_a_third_seed():
    """The medium budget's phi = 2 figures: the paper's B2 over the grid's by 0.0041 (sd 0.0023) and over width's by
    0.0044 (sd 0.0044): both wins are thin, so all three are trained again."""
    paper, grid, width = seeds(0.9241, 0.9245), seeds(0.9185, 0.9218), seeds(0.9168, 0.9230)
    assert third_seed_rules({"compound": paper, "grid": grid, "width": width}) == ["compound", "grid", "width"]
    clear = seeds(0.9400, 0.9410)
    assert third_seed_rules({"compound": clear, "grid": grid, "width": width}) == []  # wins by far: settled
    # Only the rivals the best does not beat by twice the spread join it.
    best, thin, far = seeds(0.9300, 0.9302), seeds(0.9250, 0.9280), seeds(0.9000, 0.9002)
    assert third_seed_rules({"a": best, "b": thin, "c": far}) == ["a", "b"]


def test_a_rival_inside_the_spread_keeps_its_third_seed_when_the_others_third_seeds_land():
    """The medium budget after the paper's and the grid's third seeds: the paper's B2 now beats the grid's by more
    than twice the spread, but width's (two seeds, sd 0.0044) lies inside its spread. Width's third seed decides
    the default, so it must still be trained."""
    paper, grid = seeds(0.9241, 0.9245, 0.9230), seeds(0.9185, 0.9218, 0.9197)
    width = seeds(0.9168, 0.9230)
    assert third_seed_rules({"compound": paper, "grid": grid, "width": width}) == ["compound", "width"]
