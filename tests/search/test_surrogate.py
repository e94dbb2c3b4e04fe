"""The surrogate benchmark's parts: the evaluation table (restored, not retrained), the surrogate (ranks what it
has not seen), strategies searching on it as real searches do, and bad tables refused in one line."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau
from test_search import TINY

from db import open_database, searches, trials
from effnas.records import SearchStatus, TrialRole, TrialStatus
from nas.search.command import build_parser, config_from_args, run_study
from nas.search.predictor import ENSEMBLE_MODELS
from nas.search.study import Study, create_search, search_space
from nas.search.surrogate import (
    Surrogate,
    SurrogateEvaluator,
    TableEntry,
    TableError,
    entry_features,
    load_table,
    seed_noise,
    table_search_args,
)
from nas.space.flops import count_flops, count_params
from nas.training.data import load_task_data

REPO = Path(__file__).resolve().parents[2]
TASK = ["--target-flops", "400M", *TINY]
SEARCH_STRATEGIES = ("random", "evolution", "tpe", "reinforce", "predictor")


def config_for(*options):
    return config_from_args(build_parser().parse_args([*TASK, "--no-reference", "--time-budget", "none", *options]))


@pytest.fixture(scope="module")
def task():
    config = config_for()
    data = load_task_data(config.task, config.proxy.resolution)
    return config, data, search_space(config, data.num_classes, data.in_channels)


def structured_accuracy(sample):
    """Accuracy with the structure real ones have: wide early stages and 5x5 kernels help, dropped layers hurt."""
    return 0.5 + sum(0.03 * sample[f"stage{i}_width"] * (8 - i) / 7 + 0.01 * (sample[f"stage{i}_kernel"] == 5)
                     + 0.01 * sample[f"stage{i}_layers"] for i in range(1, 8))


def synthetic_table(space, count, seed=0, noise=0.01):
    """Entries of uniform samples with their real FLOPs and params, and accuracies from `structured_accuracy` plus
    noise, every other one at a second seed too. The training-free scores are placeholders: these tests fit
    surrogates without them."""
    rng = random.Random(seed)
    entries = []
    for index in range(count):
        sample = {label: rng.choice(values) for label, values in space.choices()}
        spec = space.decode(sample)
        truth = structured_accuracy(sample)
        accuracy = {"0": truth + rng.gauss(0, noise)}
        if index % 2 == 0:
            accuracy["1"] = truth + rng.gauss(0, noise)
        entries.append({"sample": sample, "flops": count_flops(spec, space.resolution), "params": count_params(spec),
                        "zero_cost": {"naswot": 0.0, "synflow": 0.0, "grad_norm": 0.0}, "accuracy": accuracy})
    return entries


def write_table(path, entries, search=" ".join(["nas.search", *TASK])):
    path.write_text(json.dumps({"setup": {"search": search}, "entries": entries}))
    return path


@pytest.mark.parametrize("model", ENSEMBLE_MODELS)
def test_the_surrogate_ranks_architectures_it_was_not_fitted_on(tmp_path, task, model):
    _, _, space = task
    entries = load_table(write_table(tmp_path / "table.json", synthetic_table(space, 200, noise=0.003)), space)
    surrogate = Surrogate(entries[:150], space, model, scores=())
    predicted = [surrogate.predict(entry_features(entry, space, ())) for entry in entries[150:]]
    truth = [entry.accuracy[0] for entry in entries[150:]]
    assert kendalltau(predicted, truth).statistic > 0.4


def test_the_noise_is_the_tables_own_seed_to_seed_spread():
    pairs = [(0.80, 0.82), (0.70, 0.69), (0.75, 0.75), (0.60, 0.64)]
    entries = [TableEntry({}, 1, 1, {}, {0: a, 1: b}) for a, b in pairs]
    differences = [a - b for a, b in pairs]
    expected = np.std(differences, ddof=1) / math.sqrt(2)
    assert seed_noise(entries) == pytest.approx(expected)


def surrogate_search(db, task, strategy, seed, trials_wanted, surrogate, search_id=None):
    config = config_for("--strategy", strategy, "--seed", str(seed), "--trials", str(trials_wanted))
    _, data, _ = task
    if search_id is None:
        search_id = create_search(db, config, f"surrogate-{strategy}")
    evaluator = SurrogateEvaluator(surrogate, config.reward, config.proxy, data, noise=0.01, seed=seed)
    study = Study(db, search_id, config, evaluator)
    run_study(study)
    study.end(None)
    return search_id, evaluator


@pytest.fixture(scope="module")
def surrogate(task, tmp_path_factory):
    _, _, space = task
    path = write_table(tmp_path_factory.mktemp("table") / "table.json", synthetic_table(space, 40))
    return Surrogate(load_table(path, space), space, scores=())


@pytest.mark.parametrize("strategy", SEARCH_STRATEGIES)
def test_each_strategy_searches_the_surrogate_and_stores_its_trials_as_a_search_would(tmp_path, task, surrogate,
                                                                                       strategy):
    db = open_database(f"sqlite:///{tmp_path / 'surrogate.db'}")
    search_id, evaluator = surrogate_search(db, task, strategy, 0, 8, surrogate)
    assert searches.get_search(db, search_id).status is SearchStatus.FINISHED
    rows = trials.list_trials(db, search_id)
    assert [row.number for row in rows] == list(range(8)) and all(r.role is TrialRole.CANDIDATE for r in rows)
    assert len({row.arch_key for row in rows}) == 8
    _, _, space = task
    for row in rows:
        spec = space.decode(row.sample)
        assert (row.flops, row.params) == (count_flops(spec, space.resolution), count_params(spec))
        if row.status is TrialStatus.COMPLETE:
            # The accuracy is the surrogate's, with noise of the stated size, and the reward is computed from it.
            assert abs(row.accuracy - evaluator.predicted[row.arch_key]) < 0.05
            assert row.reward == pytest.approx(row.accuracy * (row.flops / 400e6) ** -0.07)
        else:
            assert row.status is TrialStatus.REJECTED and row.flops > 4 * 400e6


@pytest.mark.slow
# TPE proposes at random for its first 20 trials (NNI's n_startup_jobs), so its split falls after them.
@pytest.mark.parametrize("strategy, split_at, total", [("predictor", 7, 9), ("tpe", 23, 26)])
def test_a_search_on_the_surrogate_resumes_to_the_trials_of_an_uninterrupted_run(tmp_path, task, surrogate, strategy,
                                                                                  split_at, total):
    db = open_database(f"sqlite:///{tmp_path / 'surrogate.db'}")
    straight, _ = surrogate_search(db, task, strategy, 3, total, surrogate)
    split, _ = surrogate_search(db, task, strategy, 3, split_at, surrogate)
    surrogate_search(db, task, strategy, 3, total, surrogate, search_id=split)

    def seen(search_id):
        return [(row.arch_key, row.accuracy) for row in trials.list_trials(db, search_id)]

    assert seen(split) == seen(straight) and len(seen(straight)) == total


def test_bad_tables_are_refused_in_one_line_naming_the_problem(tmp_path, task):
    _, _, space = task
    good = synthetic_table(space, 25)
    bad_value = [dict(good[0], sample={**good[0]["sample"], "stage2_kernel": 9}), *good[1:]]
    cases = {
        "does not exist": tmp_path / "missing.json",
        "not readable JSON": tmp_path / "broken.json",
        "has no list of 'entries'": write_table(tmp_path / "none.json", {}),
        "entry 1 has no 'flops'": write_table(tmp_path / "key.json", [{k: v for k, v in good[0].items()
                                                                       if k != "flops"}, *good[1:]]),
        "entry 1: stage2_kernel is 9": write_table(tmp_path / "value.json", bad_value),
        "has 5 entries; a surrogate needs 20": write_table(tmp_path / "few.json", good[:5]),
    }
    (tmp_path / "broken.json").write_text('{"entries": [')
    for problem, path in cases.items():
        with pytest.raises(TableError) as error:
            load_table(path, space)
        assert problem in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(TableError, match="does not say which search"):
        table_search_args(write_table(tmp_path / "nosearch.json", good, search=""))


def bench(script, *args, cwd):
    return subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_the_benches_refuse_a_missing_or_malformed_table_and_an_unknown_strategy(tmp_path):
    (tmp_path / "broken.json").write_text("not json")
    runs = [
        bench("search_surrogate.py", "--table", str(tmp_path / "missing.json"), cwd=tmp_path),
        bench("search_surrogate.py", "--table", str(tmp_path / "broken.json"), cwd=tmp_path),
        bench("search_surrogate.py", "--strategies", "random,annealing", cwd=tmp_path),
        bench("surrogate_fit.py", "--table", str(tmp_path / "missing.json"), cwd=tmp_path),
        bench("search_surrogate.py", "--surrogate-scores", "fisher", cwd=tmp_path),
        bench("search_surrogate.py", "--workers", "0", cwd=tmp_path),
        bench("evaluation_table.py", "--workers", "0", "--out", str(tmp_path / "table.json"), cwd=tmp_path),
        bench("search_confirm.py", "--workers", "0", "--out", str(tmp_path / "confirm.json"), cwd=tmp_path),
    ]
    for run, problem in zip(runs, ("does not exist", "not readable JSON", "unknown strategy 'annealing'",
                                   "does not exist", "unknown --surrogate-scores 'fisher'",
                                   "--workers must be at least 1", "--workers", "--workers must be at least 1")):
        assert run.returncode == 2, run.stderr
        assert problem in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_the_evaluation_table_restores_its_entries_and_trains_only_new_ones(tmp_path):
    out = tmp_path / "table.json"
    options = ["--second-seed-every", "2", "--out", str(out), "--", *TASK]
    first = bench("evaluation_table.py", "--count", "2", *options, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    table = json.loads(out.read_text())
    assert len(table["entries"]) == 2 and "1" in table["entries"][0]["accuracy"]
    again = bench("evaluation_table.py", "--count", "2", *options, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "proxy accuracy" not in again.stdout and "seed 1" not in again.stdout
    assert json.loads(out.read_text())["entries"] == table["entries"]
    grown = bench("evaluation_table.py", "--count", "3", *options, cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr
    assert grown.stdout.count("proxy accuracy") == 1 and "seed 1" in grown.stdout
    entries = json.loads(out.read_text())["entries"]
    assert entries[:2] == table["entries"] and len(entries) == 3
    # Two worker processes score the same draws in the same order, and save the same draw counters.
    parallel = tmp_path / "parallel.json"
    two = bench("evaluation_table.py", "--count", "3", "--workers", "2", "--second-seed-every", "2", "--out",
                str(parallel), "--", *TASK, cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    made = json.loads(parallel.read_text())
    assert [e["sample"] for e in made["entries"]] == [e["sample"] for e in entries]
    assert [sorted(e["accuracy"]) for e in made["entries"]] == [sorted(e["accuracy"]) for e in entries]
    assert (made["drawn"], made["over_cap"]) == (json.loads(out.read_text())["drawn"],
                                                json.loads(out.read_text())["over_cap"])
    other = bench("evaluation_table.py", "--count", "3", "--out", str(out), "--", "--target-flops", "300M", *TINY,
                  cwd=tmp_path)
    assert other.returncode == 2 and "was made with" in other.stderr
