"""`--fidelity halving`: successive halving continues promoted candidates from where they stopped, stores the
fidelity of every trial, and never lets a partly trained candidate win."""

import json
import random
import subprocess
import sys

import pytest
from test_search import TINY, run_search, trials

from db import open_database
from db import trials as trial_store
from effnas.records import TrialStatus
from helpers import run_main
from nas.evaluation.evaluator import Evaluator
from nas.search.command import build_parser, config_from_args
from nas.search.study import promoted, search_space
from nas.training.data import load_task_data

HALVING = ["--target-flops", "400M", "--no-reference", *TINY, "--epochs", "3", "--fidelity", "halving"]


def test_a_candidate_trains_on_when_its_first_rung_reward_is_in_the_best_1_over_eta_so_far():
    assert promoted(0.5, [0.5], 3)  # the first candidate always trains on
    assert not promoted(0.4, [0.5, 0.4], 3)
    assert promoted(0.6, [0.5, 0.4, 0.6], 3)
    assert promoted(0.55, [0.5, 0.4, 0.6, 0.55], 3)  # second of four: ceil(4/3) = 2 go on
    assert not promoted(0.45, [0.5, 0.4, 0.6, 0.45], 3)
    assert promoted(0.45, [0.5, 0.4, 0.6, 0.45, 0.3, 0.2], 2)  # third of six, eta 2: 3 go on
    assert not promoted(0.52, [0.5, 0.4, 0.6, 0.45, 0.3, 0.2, 0.7, 0.55, 0.52], 3)  # fourth of nine


@pytest.fixture(scope="module")
def evaluator_and_spec():
    config = config_from_args(build_parser().parse_args(HALVING))
    data = load_task_data(config.task, config.proxy.resolution)
    space = search_space(config, data.num_classes, data.in_channels)
    rng = random.Random(5)
    sample = {label: rng.choice(values) for label, values in space.choices()}
    return Evaluator(config.reward, config.proxy, data), space.decode(sample)


def test_a_promoted_candidate_continues_from_where_it_stopped_and_ends_as_without_halving(evaluator_and_spec):
    evaluator, spec = evaluator_and_spec
    full = evaluator.evaluate(spec)
    epochs, asked = [], []

    def promote(reward):
        asked.append(reward)
        return True

    halved = evaluator.evaluate(spec, on_epoch=lambda epoch, total: epochs.append(epoch), promote=promote)
    assert epochs == [1, 2, 3]  # no epoch trained twice: the second rung starts from the first's weights
    assert halved.accuracy == full.accuracy and halved.reward == full.reward
    assert (halved.epochs, halved.partial) == (3, False) and (full.epochs, full.partial) == (3, False)
    assert halved.first_rung_reward == asked[0] and full.first_rung_reward is None
    stopped_epochs = []
    stopped = evaluator.evaluate(spec, on_epoch=lambda epoch, total: stopped_epochs.append(epoch),
                                 promote=lambda reward: False)
    assert (stopped.status, stopped.epochs, stopped.partial) == (TrialStatus.COMPLETE, 1, True)
    assert stopped.reward == stopped.first_rung_reward == asked[0]
    assert stopped_epochs == [1]  # a candidate that is not promoted trains no further epoch


def test_a_halving_search_stores_each_trials_fidelity_and_a_partial_candidate_never_wins(tmp_path):
    db_path = tmp_path / "halving.db"
    result = run_search(*HALVING, "--trials", "6", db=db_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [row for row in trials(db_path) if row["status"] == "complete"]
    assert rows and all(row["first_rung_reward"] is not None for row in rows)
    assert all((row["epochs"], bool(row["partial"])) in ((1, True), (3, False)) for row in rows)
    assert rows[0]["epochs"] == 3 and any(row["partial"] for row in rows)
    assert all(row["reward"] == row["first_rung_reward"] for row in rows if row["partial"])
    assert "complete candidates trained the full proxy" in result.stdout
    assert "stopped by successive halving" in result.stderr
    db = open_database(f"sqlite:///{db_path}", create=False)
    winner = trial_store.best_trial(db, 1)
    assert not winner.partial and winner.epochs == 3
    # Even a partial trial with a far better reward stays out of the winner's place.
    stopped = next(row for row in rows if row["partial"])
    trial_store.record_outcome(db, stopped["id"], TrialStatus.COMPLETE, reward=0.999, accuracy=0.999)
    assert trial_store.best_trial(db, 1).id == winner.id
    export = subprocess.run([sys.executable, "-m", "nas.export", "--search", "1", "--format", "json", "--db",
                             str(db_path)], capture_output=True, text=True, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    exported = {t["id"]: t for t in json.loads(export.stdout)["trials"]}
    assert exported[stopped["id"]]["partial"] is True and exported[stopped["id"]]["epochs"] == 1


@pytest.mark.slow
def test_a_halving_search_resumed_reaches_the_trials_of_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight.db"
    assert run_search(*HALVING, "--trials", "7", db=straight, cwd=tmp_path).returncode == 0
    split = tmp_path / "split.db"
    assert run_search(*HALVING, "--trials", "4", db=split, cwd=tmp_path).returncode == 0
    resumed = run_search("--resume", "1", "--trials", "7", db=split, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    columns = ("arch_key", "accuracy", "epochs", "partial", "first_rung_reward")
    assert [tuple(r[c] for c in columns) for r in trials(split)] == [tuple(r[c] for c in columns)
                                                                       for r in trials(straight)]


@pytest.mark.parametrize("options, message", [
    (["--eta", "1"], "--eta must be at least 2, got 1"),
    (["--epochs", "1"], "--fidelity halving needs a proxy of at least 2 epochs"),
])
def test_bad_halving_options_get_one_line_and_exit_2(tmp_path, options, message):
    result = run_main("nas.search", "--db", str(tmp_path / "x.db"), *HALVING, *options, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists() or not trials(tmp_path / "x.db")
