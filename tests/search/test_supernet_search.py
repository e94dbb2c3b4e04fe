"""`nas.search --evaluator supernet`: candidates are scored on a stored supernet of the task and space, the best
are proxy-trained and only they can win; the supernet is reused for another target and not for another task,
resolution, stem stride or space; its training resumes exactly after kill -9; bad input stores nothing."""

import hashlib
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import run_main
from nas.evaluation.config import RewardConfig
from nas.search.config import SearchConfig
from nas.search.progress import ProgressDisplay
from nas.search.study import search_space
from nas.search.supernet_search import (
    near_chance_warning,
    no_scoring_note,
    overrun_note,
    proxy_training_stop_note,
    supernet_definition,
    supernet_key,
)
from nas.training.config import ProxyConfig, TaskConfig
from tests.search.test_search import TINY, run_search, trials

SUPERNET = ["--target-flops", "8M", "--resolution", "32", "--stem-stride", "2", "--evaluator", "supernet",
            "--supernet-epochs", "1", "--no-reference", "--time-budget", "none", *TINY]


def supernets(db: Path) -> list[dict]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("select * from supernets order by id")]


def searches(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("select count(*) from searches").fetchone()[0]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A folder whose database holds one supernet search of 12 candidates, the best 2 proxy-trained."""
    folder = tmp_path_factory.mktemp("supernet")
    result = run_search(*SUPERNET, "--trials", "12", "--proxy-train", "2", db=folder / "s.db", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_candidates_are_scored_on_the_supernet_and_only_the_proxy_trained_best_can_win(searched):
    folder, result = searched
    rows = trials(folder / "s.db")
    assert len(rows) == 12 and all(row["supernet_accuracy"] is not None for row in rows)
    by_supernet = sorted(rows, key=lambda row: (-row["supernet_reward"], row["number"]))
    trained = [row for row in rows if not row["partial"]]
    assert {row["number"] for row in trained} == {row["number"] for row in by_supernet[:2]}
    assert all(row["epochs"] == 1 for row in trained)
    assert all(row["epochs"] == 0 and row["accuracy"] == row["supernet_accuracy"] for row in rows if row["partial"])
    winner = max(trained, key=lambda row: (row["reward"], -row["number"]))
    assert f"winner (trial {winner['number']})" in result.stdout
    [stored] = supernets(folder / "s.db")
    assert stored["status"] == "complete" and stored["epochs_done"] == 1
    weights = Path(stored["weights_path"])
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == stored["weights_sha256"]
    assert "supernet acc" in result.stderr
    # One supernet epoch on the tiny task leaves paths near chance on its ten classes: the user is told.
    median = statistics.median(row["supernet_accuracy"] for row in rows)
    assert ("paths score near chance" in result.stderr) == (median < 0.2), (median, result.stderr)
    exported = subprocess.run([sys.executable, "-m", "nas.export", "--search", "1", "--format", "json", "--db",
                               str(folder / "s.db")], cwd=folder, capture_output=True, text=True, timeout=120)
    fidelity = {row["number"]: row["fidelity"] for row in json.loads(exported.stdout)["trials"]}
    assert fidelity == {row["number"]: "supernet" if row["partial"] else "proxy" for row in rows}


def test_a_supernet_scoring_its_paths_near_chance_is_called_close_to_random():
    warning = near_chance_warning([0.11, 0.12, 0.16], classes=10)
    assert "median accuracy 0.120 over 3 candidates, chance 0.100" in warning and "--evaluator proxy" in warning
    assert near_chance_warning([0.1, 0.5, 0.6], classes=10) is None
    assert near_chance_warning([0.3, 0.35], classes=2) is not None


def test_a_supernet_training_logged_to_a_file_says_about_every_minute_where_it_stands(capsys):
    """Without a terminal (a log, as under nohup) a supernet epoch of several minutes is not silent."""
    now = [0.0]
    display = ProgressDisplay(SearchConfig(reward=RewardConfig(target_flops=8_000_000, resolution=32)),
                              clock=lambda: now[0])
    for step in range(1, 63):  # an epoch is 62 steps on the search's ~4,000 training images
        now[0] = step * 2.5
        display.supernet_step(1, 4, step, 62)
    assert capsys.readouterr().err.splitlines() == [
        "supernet epoch 1/4, step 25/62, ~1m32s left in this epoch",
        "supernet epoch 1/4, step 49/62, ~32s left in this epoch",
    ]


def test_a_supernet_that_will_run_the_search_past_its_time_budget_is_announced_with_epochs_that_fit():
    """A 9-minute search with 6 supernet epochs (the default once) of about 4-6 minutes each on 2 cores (bench/
    supernet_search.py's first run) would end after about 35 minutes without a word."""
    note = overrun_note(epochs_left=5, seconds_per_epoch=100, elapsed=120, time_budget=540)
    assert "5 remaining epoch(s) take about 8m20s" in note and "past its time budget (9m00s)" in note
    assert "--supernet-epochs 2 trains one in about half of it" in note
    slow = overrun_note(epochs_left=5, seconds_per_epoch=375, elapsed=400, time_budget=540)
    assert "even one epoch takes more than half of it; give a longer --time-budget" in slow
    assert overrun_note(epochs_left=2, seconds_per_epoch=100, elapsed=120, time_budget=540) is None
    assert overrun_note(epochs_left=5, seconds_per_epoch=600, elapsed=120, time_budget=None) is None
    # Past the budget with no epoch left: the search's own note says no candidate is scored in this run.
    assert overrun_note(epochs_left=0, seconds_per_epoch=600, elapsed=900, time_budget=540) is None


def test_a_supernet_that_leaves_no_time_to_score_says_how_the_budget_went():
    """bench/supernet_search.py's 9-minute run: one epoch took 7m23s, and 2m15s are kept for the proxy trainings."""
    note = no_scoring_note(elapsed=443, time_budget=540, held_back=135, minimum=30)
    assert "took 7m23s of the 9m00s time budget" in note and "the last 2m15s are kept for proxy-training" in note
    assert "only the first 30 candidates are scored" in note and "--resume with a longer --time-budget" in note
    assert no_scoring_note(elapsed=300, time_budget=540, held_back=135, minimum=30) is None


def test_a_supernet_that_took_the_whole_budget_still_hands_over_a_proxy_trained_winner(searched, tmp_path):
    """bench/supernet_search.py's first 9-minute run, on a machine where the supernet's epoch took 7m23s, scored
    nothing and ended without a winner. Here the budget has passed before the stored supernet is loaded."""
    folder, _ = searched
    db = tmp_path / "s.db"
    shutil.copy(folder / "s.db", db)
    untimed = [a for a in SUPERNET if a not in ("--time-budget", "none")]
    result = run_search(*untimed, "--time-budget", "0.01s", "--proxy-train", "2", "--seed", "3", db=db, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "only the first 20 candidates are scored" in result.stderr
    rows = trials(db, search_id=2)
    scored = [row for row in rows if row["status"] == "complete"]
    assert len(rows) == 20 and scored and all(row["supernet_accuracy"] is not None for row in scored)
    [trained] = [row for row in scored if not row["partial"]]
    assert f"winner (trial {trained['number']})" in result.stdout


def test_near_its_end_a_search_keeps_back_what_its_best_candidates_trainings_take_not_the_first_guess(searched):
    """The tutorial's search kept 3 x the reference's training (201 s) for its best 3 and used 44 s of it."""
    from db import open_database, searches
    from nas.evaluation.evaluator import Evaluator
    from nas.search.study import Study
    from nas.search.supernet_search import ProxyTrainingReserve
    from nas.training.data import load_task_data

    folder, _ = searched
    db = open_database(f"sqlite:///{folder / 's.db'}", create=False)
    stored = SearchConfig.from_config(searches.get_search(db, 1).config)
    # The search proxy-trained its best 2; asking for its best 4 leaves two of them untrained.
    config = replace(stored, time_budget=100.0, proxy_trained=4)
    study = Study(db, 1, config, Evaluator(config.reward, config.proxy, load_task_data(config.task, 32)))
    assert ProxyTrainingReserve(study, first_guess=10.0)() == 10.0
    near_end = ProxyTrainingReserve(study, first_guess=1000.0)()
    # Two proxy trainings of one epoch on 240 images: seconds, not the first guess's quarter hour.
    assert 0 < near_end < 60
    study.config = replace(stored, time_budget=100.0)
    assert ProxyTrainingReserve(study, first_guess=1000.0)() == 1000.0


def test_the_best_candidates_proxy_training_stops_where_the_next_would_pass_the_time_budget():
    """bench/supernet_search.py's 9-minute run proxy-trained its best 3 for 7 minutes and ended after 15m48s."""
    assert proxy_training_stop_note(done=0, best=3, last_seconds=0, elapsed=600, time_budget=540) is None
    note = proxy_training_stop_note(done=1, best=3, last_seconds=140, elapsed=530, time_budget=540)
    assert "proxy-trained 1 of the best 3" in note and "(the last took 2m20s)" in note and "9m00s" in note
    assert proxy_training_stop_note(done=1, best=3, last_seconds=140, elapsed=300, time_budget=540) is None
    assert proxy_training_stop_note(done=2, best=3, last_seconds=140, elapsed=900, time_budget=None) is None


def test_a_second_target_reuses_the_stored_supernet(searched):
    folder, _ = searched
    db = folder / "second.db"
    shutil.copy(folder / "s.db", db)
    result = run_search(*[a if a != "8M" else "4M" for a in SUPERNET], "--trials", "3", "--proxy-train", "1",
                        db=db, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "reusing its 1 trained epoch" in result.stderr and "supernet: epoch" not in result.stderr
    assert len(supernets(db)) == 1 and len(trials(db, search_id=2)) == 3


def test_a_supernet_is_defined_by_task_resolution_stem_stride_and_space_not_by_the_target():
    config = SearchConfig(reward=RewardConfig(target_flops=8_000_000, resolution=32), stem_stride=2)

    def key(changed: SearchConfig, classes: int = 10) -> str:
        return supernet_key(supernet_definition(changed, search_space(changed, classes, 1)))

    same = [replace(config, reward=RewardConfig(target_flops=4_000_000, resolution=32)),
            replace(config, task=replace(config.task, threads=2)), replace(config, strategy="random")]
    other = [replace(config, task=TaskConfig(dataset="fashion-mnist")), replace(config, proxy=ProxyConfig(resolution=64)),
             replace(config, stem_stride=1), replace(config, fixed={"kernel": 3}),
             replace(config, task=replace(config.task, subset=1000))]
    assert all(key(changed) == key(config) for changed in same)
    assert len({key(config), key(config, classes=3), *(key(changed) for changed in other)}) == len(other) + 2


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["tpe", "evolution", "random", "reinforce", "predictor"])
def test_every_strategy_scores_on_the_supernet_and_resumes_to_the_same_trials(searched, tmp_path, strategy):
    folder, _ = searched
    straight, split = tmp_path / "straight.db", tmp_path / "split.db"
    for db in (straight, split):
        shutil.copy(folder / "s.db", db)
    common = [*SUPERNET, "--strategy", strategy, "--proxy-train", "1"]
    assert run_search(*common, "--trials", "8", db=straight, cwd=tmp_path).returncode == 0
    assert run_search(*common, "--trials", "4", db=split, cwd=tmp_path).returncode == 0
    resumed = run_search("--resume", "2", "--trials", "8", db=split, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    scored = [[(row["arch_key"], row["supernet_accuracy"]) for row in trials(db, search_id=2)]
              for db in (straight, split)]
    assert len(scored[0]) == 8 and scored[0] == scored[1]


@pytest.mark.slow
def test_supernet_training_killed_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    common = [*SUPERNET, "--trials", "1", "--proxy-train", "1"]
    common[common.index("--supernet-epochs") + 1] = "2"
    straight = tmp_path / "straight"
    straight.mkdir()
    assert run_search(*common, db=straight / "s.db", cwd=straight).returncode == 0
    split = tmp_path / "split"
    split.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "nas.search", "--db", str(split / "s.db"), *common], cwd=split,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            if (split / "s.db").exists() and any(row["epochs_done"] == 1 for row in supernets(split / "s.db")):
                break
        except sqlite3.OperationalError:
            continue
    assert proc.poll() is None, "the search ended before its supernet's first epoch was stored"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert supernets(split / "s.db")[0]["status"] == "running"
    resumed = run_search("--resume", "1", db=split / "s.db", cwd=split)
    assert resumed.returncode == 0, resumed.stderr
    weights = [Path(supernets(folder / "s.db")[0]["weights_path"]).read_bytes() for folder in (straight, split)]
    assert hashlib.sha256(weights[0]).digest() == hashlib.sha256(weights[1]).digest()
    assert [row["arch_key"] for row in trials(split / "s.db")] == [row["arch_key"] for row in trials(straight / "s.db")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--proxy-train", "0"], "--proxy-train must be at least 1"),
        (["--fidelity", "halving"], "does not go with --fidelity halving"),
        (["--workers", "2"], "drop --workers"),
        (["--strategy", "random", "--prescreen", "4"], "does not go with --prescreen"),
    ],
)
def test_bad_supernet_options_give_one_line_exit_2_and_no_database(tmp_path, args, message):
    db = tmp_path / "never.db"
    result = run_main("nas.search", "--db", str(db), *SUPERNET, *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not db.exists()


def test_a_missing_or_corrupt_supernet_file_gives_one_line_exit_2_and_stores_no_search(searched, tmp_path):
    folder, _ = searched
    db = tmp_path / "s.db"
    shutil.copy(folder / "s.db", db)
    weights = tmp_path / "supernet.pt"
    with sqlite3.connect(db) as c:
        source = c.execute("select weights_path from supernets").fetchone()[0]
        c.execute("update supernets set weights_path = ?", (str(weights),))
    for damage, message in ((lambda: None, "is missing"),
                            (lambda: weights.write_bytes(Path(source).read_bytes()[:1000]), "is corrupt")):
        damage()
        result = run_search(*SUPERNET, "--trials", "2", db=db, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert searches(db) == 1
    before = trials(db)
    resumed = run_search("--resume", "1", "--trials", "20", db=db, cwd=tmp_path)
    assert resumed.returncode == 2 and "is corrupt" in resumed.stderr and trials(db) == before
