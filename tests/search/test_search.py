import json
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from effnas.cli import UsageError, parse_duration, parse_flops
from helpers import run_main
from nas.evaluation.pareto import pareto_front
from nas.evaluation.reward import reward, reward_exponent
from nas.search.progress import busy_machine_note
from nas.search.study import arch_key
from nas.space.flops import count_flops, count_params
from nas.space.search_space import SearchSpace, auto_stem_stride, head_map_size, parse_fixed
from nas.space.spec import efficientnet_b0, spec_from_dict
from nas.training.config import DataError, TaskConfig
from nas.training.data import load_task_data

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--subset", "300", "--proxy-resolution", "32", "--threads", "1"]


def run_search(*args, db, cwd, timeout=300):
    env = {**os.environ, "EFFNAS_DB": ""}
    return subprocess.run(
        [sys.executable, "-m", "nas.search", "--db", str(db), *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=env,
    )


def straight_and_resumed(common: list[str], stop_at: int, total: int, tmp_path) -> tuple[list[dict], list[dict]]:
    """The trials of a search run straight to `total` trials, and of the same search stopped after `stop_at` and
    resumed to `total`."""
    straight, split = tmp_path / "straight.db", tmp_path / "split.db"
    result = run_search(*common, "--trials", str(total), db=straight, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert run_search(*common, "--trials", str(stop_at), db=split, cwd=tmp_path).returncode == 0
    resumed = run_search("--resume", "1", "--trials", str(total), db=split, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    return trials(straight), trials(split)


def trials(db, search_id=1, role="candidate"):
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute(
            "select * from trials where search_id=? and role=? order by number", (search_id, role))]


def freeze_when(proc, db, ready, timeout=300):
    """Wait until the stored trials satisfy `ready`, then stop the search process (SIGSTOP) and read them again:
    while it is stopped the state cannot move on, so the signal the test sends next lands in exactly that state.
    The caller sends its signal and then SIGCONT. Returns the trials as they stand."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the search ended before the state this test waits for"
        time.sleep(0.2)
        try:
            if not (db.exists() and ready(trials(db))):
                continue
            proc.send_signal(signal.SIGSTOP)
            rows = trials(db)
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            continue
        if ready(rows):
            return rows
        proc.send_signal(signal.SIGCONT)
    raise AssertionError("timed out waiting for the state this test needs")


# -- reward and constraint maths ------------------------------------------------------------------------------

@pytest.mark.parametrize(("threads", "cores", "load", "warned"), [
    (2, 2, 2.1, True),    # two other jobs on a 2-core machine
    (2, 2, 1.0, True),    # one is enough: the two training threads no longer have a core each
    (2, 2, 0.1, False),   # idle machine
    (1, 2, 3.0, False),   # one thread has nothing to wait for
    (4, 16, 3.0, False),  # plenty of free cores
])
def test_a_busy_machine_gets_a_note_to_train_with_one_thread(threads, cores, load, warned):
    note = busy_machine_note(threads, cores, load)
    assert (note is not None) == warned
    if warned:
        assert "--threads 1" in note and f"load {load:.1f} on {cores} cores" in note


def test_soft_reward_is_accuracy_times_flops_ratio_to_the_minus_0_07():
    assert reward(0.8, 400e6, 400e6) == pytest.approx(0.8)
    assert reward(0.8, 800e6, 400e6) == pytest.approx(0.8 * 2 ** -0.07)
    assert reward(0.8, 200e6, 400e6) == pytest.approx(0.8 * 0.5 ** -0.07)
    assert reward(0.8, 200e6, 400e6) > reward(0.8, 400e6, 400e6) > reward(0.8, 800e6, 400e6)


def test_hard_constraint_ignores_flops_below_target_and_punishes_above():
    assert reward_exponent(100e6, 400e6, "hard") == 0.0
    assert reward(0.8, 100e6, 400e6, "hard") == pytest.approx(0.8)
    assert reward(0.8, 800e6, 400e6, "hard") == pytest.approx(0.4)
    assert reward(0.8, 800e6, 400e6, "hard", w=-0.5) == pytest.approx(0.8 * 2 ** -0.5)
    assert reward(0.8, 800e6, 400e6, "soft", w=-0.2) == pytest.approx(0.8 * 2 ** -0.2)


@pytest.mark.parametrize("text", ["400M", "0.4G", "4e8", "400000000", "400m", " 400 M ", "0.4B", "400MFLOPs"])
def test_flops_targets_in_every_spelling_mean_400_million(text):
    assert parse_flops(text) == 400_000_000


@pytest.mark.parametrize("text", ["abc", "0", "-5M", "0M", "M", "4e8x", ""])
def test_bad_flops_targets_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_flops(text)


def test_durations():
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    with pytest.raises(UsageError):
        parse_duration("soon")


@pytest.mark.parametrize(("options", "evaluator", "reason"), [
    ([], "supernet", "the default"),
    (["--strategy", "random", "--time-budget", "30m"], "supernet", "the default"),
    (["--trials", "40"], "proxy", "with --trials"),
    (["--workers", "2"], "proxy", "with --workers"),
    (["--fidelity", "halving", "--prescreen", "4", "--strategy", "random"], "proxy", "--fidelity halving, --prescreen"),
    (["--trials", "40", "--evaluator", "supernet"], "supernet", "--evaluator"),
])
def test_the_default_evaluator_is_the_supernet_unless_an_option_counts_proxy_trained_candidates(
        options, evaluator, reason):
    """The default 9-minute run scores on a supernet (bench/supernet_search.py measured it best there); a user who
    sizes the search in trials, or trains them in parallel processes, gets every candidate trained."""
    from nas.search.command import build_parser, config_from_args, evaluator_from_args

    args = build_parser().parse_args(["--target-flops", "8M", *options])
    assert evaluator_from_args(args)[0] == evaluator and reason in evaluator_from_args(args)[1]
    if "--workers" not in options:
        config = config_from_args(args)
        assert config.evaluator == evaluator
        assert config.trials == (40 if "--trials" in options else 5000 if evaluator == "supernet" else 40)


@pytest.mark.parametrize("options, trials", [
    (["--evaluator", "proxy"], 40),
    (["--evaluator", "proxy", "--time-budget", "30m"], 5000),
    (["--evaluator", "proxy", "--time-budget", "none"], 40),
    (["--evaluator", "proxy", "--time-budget", "30m", "--trials", "60"], 60),
])
def test_a_proxy_search_given_a_time_budget_runs_until_the_budget_ends_it(options, trials):
    """`--evaluator proxy --time-budget 30m`, as the docs suggest for spending a budget, once stopped at the default
    40 trials after 18 minutes; a budget given now ends the search, and an explicit --trials still caps it."""
    from nas.search.command import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--target-flops", "8M", *options]))
    assert config.trials == trials


# -- space ------------------------------------------------------------------------------------------------------

def test_b0_choices_decode_to_exactly_the_official_b0():
    space = SearchSpace(num_classes=1000, in_channels=3)
    assert space.decode(space.b0_sample()) == efficientnet_b0()
    assert count_params(space.reference_spec()) == 5_288_548


def test_nni_model_space_freezes_b0_through_the_foundation_builder():
    from nas.search.strategies import MnasModelSpace

    space = SearchSpace(num_classes=1000, in_channels=3)
    model = MnasModelSpace.of(space).freeze(space.b0_sample())
    assert sum(p.numel() for p in model.parameters()) == 5_288_548
    assert not any("nni" in type(m).__module__ for m in model.modules())


def test_samples_that_differ_only_in_unused_choices_are_the_same_architecture():
    space = SearchSpace(num_classes=10, in_channels=1)
    a = space.b0_sample()
    b = dict(a, stage1_skip="none")  # stage 1 is one block 32->16: no identity skip can exist there
    assert space.decode(a) == space.decode(b)
    assert space.decode(a).arch_key() == space.decode(b).arch_key()
    c = dict(a, stage2_skip="none")  # stage 2 has a second block with a real skip
    assert space.decode(a).arch_key() != space.decode(c).arch_key()


def test_space_choices_and_fixing():
    space = SearchSpace(num_classes=10, in_channels=1)
    assert space.size() == (5 * 2 * 2 * 2 * 3 * 3) ** 7
    fixed = SearchSpace(num_classes=10, in_channels=1, fixed=parse_fixed(["block=mbconv_e6", "width=1.0"]))
    assert fixed.size() == (2 * 2 * 2 * 3) ** 7
    rng = random.Random(0)
    for _ in range(20):
        sample = {label: rng.choice(values) for label, values in fixed.choices()}
        spec = fixed.decode(sample)
        assert all(stage.expand_ratio == 6 for stage in spec.stages)
        assert [s.out_channels for s in spec.stages] == [16, 24, 40, 80, 112, 192, 320]


# -- Pareto ---------------------------------------------------------------------------------------------------

def brute_force_front(costs, accs):
    keep = []
    for i in range(len(costs)):
        dominated = any(
            costs[j] <= costs[i] and accs[j] >= accs[i] and (costs[j] < costs[i] or accs[j] > accs[i])
            for j in range(len(costs))
        )
        if not dominated:
            keep.append(i)
    return keep


def test_pareto_front_equals_brute_force_including_ties():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 40)
        costs = [rng.choice([1, 2, 3, 5, 8]) for _ in range(n)]
        accs = [rng.choice([0.1, 0.5, 0.7, 0.9]) for _ in range(n)]
        front = pareto_front(costs, accs)
        expected = brute_force_front(costs, accs)
        # duplicates of one point: the front keeps exactly one of them
        assert {(costs[i], accs[i]) for i in front} == {(costs[i], accs[i]) for i in expected}
        assert [costs[i] for i in front] == sorted(costs[i] for i in front)


# -- data -----------------------------------------------------------------------------------------------------

def test_embedded_mnist_is_split_deterministically_without_overlap():
    a = load_task_data(TaskConfig(), 32)
    b = load_task_data(TaskConfig(), 32)
    assert (len(a.train), len(a.val), a.test) == (4000, 1000, None)
    images, _ = next(a.in_order(a.train, 8))
    assert images.shape[1:] == (1, 32, 32) and a.num_classes == 10
    assert np.array_equal(a.val.labels.numpy(), b.val.labels.numpy())


def make_cifar(root: Path, batches=2, per_batch=30):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, batches + 1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, per_batch))}, f)
    with open(folder / "test_batch", "wb") as f:
        f.write(b"the test split must never be read")
    return root


def test_cifar10_pickle_layout_loads_train_batches_only(tmp_path):
    data = load_task_data(TaskConfig(dataset="cifar10", data_dir=str(make_cifar(tmp_path))), 32)
    assert len(data.train) + len(data.val) == 60
    assert data.in_channels == 3 and data.resolution == 32


def test_imagefolder_loads_one_folder_per_class(tmp_path):
    from PIL import Image

    for label, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (tmp_path / label).mkdir()
        for i in range(6):
            Image.new("RGB", (20 + i, 24), colour).save(tmp_path / label / f"{i}.png")
    data = load_task_data(TaskConfig(dataset="imagefolder", data_dir=str(tmp_path)), 40)
    images, _ = next(data.in_order(data.train, 4))
    assert data.num_classes == 2 and images.shape[1:] == (3, 40, 40)
    assert len(data.train) + len(data.val) == 12


def test_malformed_data_directories_give_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_task_data(TaskConfig(dataset="cifar10", data_dir=str(tmp_path / "missing")), 32)
    with pytest.raises(DataError, match="no CIFAR-10"):
        load_task_data(TaskConfig(dataset="cifar10", data_dir=str(tmp_path)), 32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        load_task_data(TaskConfig(dataset="cifar10", data_dir=str(bad)), 32)
    with pytest.raises(DataError, match="two class folders"):
        load_task_data(TaskConfig(dataset="imagefolder", data_dir=str(bad)), 32)


# -- the command end to end -----------------------------------------------------------------------------------

def test_tiny_search_end_to_end_writes_every_trial(tmp_path):
    db = tmp_path / "s.db"
    result = run_search("--target-flops", "400M", "--trials", "3", *TINY, db=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Search id: 1" in result.stdout and "EfficientNet-B0 (same evaluator)" in result.stdout
    assert "multiply-accumulates" in result.stdout
    assert "Traceback" not in result.stderr and "[nni" not in result.stderr.lower()
    assert "Stem stride 2 (auto: at 224 px B0's stride-2 stem leaves 7x7 before the head)" in result.stderr
    rows = trials(db)
    assert len(rows) == 3 and len({r["arch_key"] for r in rows}) == 3
    for row in rows:
        spec = spec_from_dict(__import__("json").loads(row["arch"]))
        assert spec.stem_stride == 2
        assert row["flops"] == count_flops(spec, 224) and row["params"] == count_params(spec)
        if row["status"] == "complete":
            assert row["reward"] == pytest.approx(row["accuracy"] * (row["flops"] / 400e6) ** -0.07)
            assert row["train_seconds"] > 0
    reference = trials(db, role="reference")
    assert len(reference) == 1 and reference[0]["status"] == "complete"
    with sqlite3.connect(db) as c:
        assert c.execute("select status from searches").fetchone()[0] == "finished"


def test_the_stem_stride_rule_keeps_two_by_two_before_the_head():
    assert auto_stem_stride(32)[0] == 1 and "1x1" in auto_stem_stride(32)[1]
    assert [auto_stem_stride(size)[0] for size in (33, 48, 64, 96, 224)] == [2, 2, 2, 2, 2]
    assert head_map_size(32, 1) == 2 and head_map_size(64, 2) == 2 and head_map_size(224, 2) == 7


def test_a_small_image_search_gets_a_stride_1_stem_by_default_and_trains_that_network(tmp_path):
    db = tmp_path / "s.db"
    result = run_search("--target-flops", "8M", "--resolution", "32", "--trials", "2", *TINY, db=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Stem stride 1 (auto: at 32 px B0's stride-2 stem would leave 1x1 before the head" in result.stderr
    assert "EfficientNet-B0, stem stride 1 (same evaluator)" in result.stdout
    for row in trials(db) + trials(db, role="reference"):
        spec = spec_from_dict(json.loads(row["arch"]))
        assert spec.stem_stride == 1 and row["arch_key"] == arch_key(spec)
        assert row["flops"] == count_flops(spec, 32)
    reference = spec_from_dict(json.loads(trials(db, role="reference")[0]["arch"]))
    # The official B0 at 32 px is 8.3M MACs; a stride-1 stem quadruples every map after it.
    assert count_flops(reference, 32) > 3 * count_flops(replace(reference, stem_stride=2), 32)


@pytest.mark.slow
def test_same_seed_gives_same_trials_and_another_seed_others(tmp_path):
    results = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        db = tmp_path / f"{name}.db"
        assert run_search("--target-flops", "400M", "--trials", "3", "--no-reference", "--seed", seed, *TINY, db=db,
                          cwd=tmp_path).returncode == 0
        results.append([(r["arch_key"], r["accuracy"]) for r in trials(db)])
    assert len(results[0]) == 3 and results[0] == results[1]
    assert [key for key, _ in results[2]] != [key for key, _ in results[0]]


@pytest.mark.slow
def test_resume_continues_to_the_run_an_uninterrupted_search_reaches(tmp_path):
    straight = tmp_path / "straight.db"
    assert run_search("--target-flops", "400M", "--trials", "5", "--no-reference", "--strategy", "evolution", *TINY,
                      db=straight, cwd=tmp_path).returncode == 0
    split = tmp_path / "split.db"
    assert run_search("--target-flops", "400M", "--trials", "2", "--no-reference", "--strategy", "evolution", *TINY,
                      db=split, cwd=tmp_path).returncode == 0
    first = trials(split)
    resumed = run_search("--resume", "1", "--trials", "5", db=split, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    rows = trials(split)
    assert rows[:2] == first  # finished trials untouched, not retrained
    assert len(rows) == 5 and len({r["arch_key"] for r in rows}) == 5
    assert [(r["arch_key"], r["accuracy"]) for r in rows] == [(r["arch_key"], r["accuracy"]) for r in trials(straight)]


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_resume_redoes_the_interrupted_one(tmp_path):
    db = tmp_path / "i.db"
    # Far more trials than the test waits for, so the search is still training when it is stopped; random search
    # proposes the same sequence whatever the trial budget, so the resume below can ask for exactly as many.
    args = [sys.executable, "-m", "nas.search", "--db", str(db), "--target-flops", "400M", "--trials", "40",
            "--time-budget", "none", "--strategy", "random", "--no-reference", *TINY]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        freeze_when(proc, db, lambda rows: any(r["status"] == "complete" for r in rows)
                    and any(r["status"] == "running" for r in rows))
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "--resume 1" in err and "Traceback" not in err
    rows = trials(db)
    finished = [r for r in rows if r["status"] == "complete"]
    interrupted = [r for r in rows if r["status"] == "interrupted"]
    assert finished and len(interrupted) == 1 and len(finished) + 1 == len(rows)
    with sqlite3.connect(db) as c:
        assert c.execute("select status from searches").fetchone()[0] == "interrupted"
    resumed = subprocess.run([sys.executable, "-m", "nas.search", "--db", str(db), "--resume", "1", "--trials",
                              str(len(rows))], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = trials(db)
    assert len(after) == len(rows) and len({r["arch_key"] for r in after}) == len(rows)
    assert all(r["status"] == "complete" for r in after)
    redone = next(r for r in after if r["id"] == interrupted[0]["id"])
    assert redone["attempts"] == 2
    for before in finished:
        assert next(r for r in after if r["id"] == before["id"]) == before


def test_candidates_far_over_budget_are_rejected_without_training(tmp_path):
    db = tmp_path / "r.db"
    result = run_search("--target-flops", "50M", "--max-flops-ratio", "1.5", "--trials", "4", "--no-reference",
                        "--strategy", "random", *TINY, db=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rejected = [r for r in trials(db) if r["status"] == "rejected"]
    assert rejected
    for row in rejected:
        assert row["flops"] > 75e6 and row["accuracy"] is None and row["train_seconds"] is None
        assert "exceed" in row["error"]


def test_a_diverging_candidate_is_recorded_as_failed_and_the_search_goes_on(tmp_path):
    db = tmp_path / "f.db"
    result = run_search("--target-flops", "400M", "--trials", "2", "--no-reference", "--lr", "1e12", *TINY,
                        db=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = trials(db)
    assert len(rows) == 2
    assert all(r["status"] == "failed" and "training diverged" in r["error"] for r in rows)


@pytest.mark.slow
def test_each_strategy_proposes_its_own_trials(tmp_path):
    proposed = {}
    # Evolution's first population is uniform draws, the same as random's with the same seed: reinforce draws from
    # its policy instead.
    for strategy in ("random", "tpe", "reinforce"):
        db = tmp_path / f"{strategy}.db"
        result = run_search("--target-flops", "400M", "--trials", "3", "--no-reference", "--strategy", strategy,
                            *TINY, db=db, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"Search 1: {strategy}," in result.stderr
        proposed[strategy] = [r["arch_key"] for r in trials(db)]
        assert len(proposed[strategy]) == 3
    # The same seed, other strategies: the strategy named is the one that proposed.
    assert len({tuple(keys) for keys in proposed.values()}) == 3


def test_grid_strategy_runs_on_a_pinned_space(tmp_path):
    db = tmp_path / "g.db"
    pins = ["--fix", "block=mbconv_e1", "--fix", "se=0", "--fix", "skip=identity", "--fix", "width=0.75",
            "--fix", "layers=-1"]
    result = run_search("--target-flops", "400M", "--trials", "2", "--no-reference", "--strategy", "grid", *pins,
                        *TINY, db=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = trials(db)
    assert len(rows) == 2 and all("e1" in r["block_strings"] for r in rows)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target-flops", "lots"], "cannot read FLOPs"),
        (["--target-flops", "0"], "must be positive"),
        (["--target-flops", "-400M"], "target-flops"),
        ([], "give one target: --target-flops"),
        (["--target-flops", "400M", "--strategy", "annealing"], "invalid choice"),
        (["--target-flops", "400M", "--trials", "0"], "--trials must be at least 1"),
        (["--target-flops", "400M", "--strategy", "grid"], "grid search needs"),
        (["--target-flops", "400M", "--fix", "kernel=4"], "--fix kernel"),
        (["--target-flops", "400M", "--dataset", "cifar10", "--data-dir", "/nonexistent/dir"], "does not exist"),
        (["--target-flops", "400M", "--dataset", "imagefolder"], "needs --data-dir"),
        (["--target-flops", "400M", "--time-budget", "soon"], "duration"),
        (["--target-flops", "400M", "--epochs", "two"], "invalid int"),
        (["--target-flops", "400M", "--prescreen", "0"], "--prescreen must be at least 1"),
        (["--target-flops", "400M", "--strategy", "tpe", "--prescreen", "4"], "--prescreen works with"),
        (["--target-flops", "400M", "--prescreen", "4"], "add --strategy evolution, random, reinforce"),
        (["--target-flops", "400M", "--prescreen-score", "magic"], "invalid choice"),
        (["--target-flops", "400M", "--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
        (["--target-flops", "8M", "--stem-stride", "3"], "invalid choice"),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_no_database(tmp_path, args, message):
    db = tmp_path / "never.db"
    result = run_main("nas.search", "--db", str(db), *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bad_database_urls_give_one_line_and_exit_2(tmp_path):
    for url in ("notadialect://x/y", str(tmp_path / "no" / "such" / "dir.db")):
        result = subprocess.run([sys.executable, "-m", "nas.search", "--db", url, "--target-flops", "400M"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    not_db = tmp_path / "notes.db"
    not_db.write_text("not a database")
    result = run_search("--target-flops", "400M", db=not_db, cwd=tmp_path)
    assert result.returncode == 2 and "not a database" in result.stderr
    assert not_db.read_text() == "not a database"


@pytest.mark.slow
def test_resume_errors_leave_the_database_unchanged(tmp_path):
    db = tmp_path / "k.db"
    assert run_search("--target-flops", "400M", "--trials", "1", "--no-reference", *TINY, db=db,
                      cwd=tmp_path).returncode == 0
    before = trials(db)
    for args, message in ((["--resume", "7"], "no search with id 7"),
                          (["--resume", "1", "--target-flops", "1G"], "drop --target-flops")):
        result = run_search(*args, db=db, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert trials(db) == before
    missing = run_search("--resume", "1", db=tmp_path / "absent.db", cwd=tmp_path)
    assert missing.returncode == 2 and not (tmp_path / "absent.db").exists()


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_reaches_the_uninterrupted_result(tmp_path):
    common = ["--target-flops", "400M", "--strategy", "random", "--no-reference", *TINY]
    db = tmp_path / "killed.db"
    proc = subprocess.Popen([sys.executable, "-m", "nas.search", "--db", str(db), *common, "--trials", "40",
                             "--time-budget", "none"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        killed = freeze_when(proc, db, lambda rows: sum(r["status"] == "complete" for r in rows) >= 2
                             and any(r["status"] == "running" for r in rows))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finished = [r for r in killed if r["status"] == "complete"]
    assert len(finished) >= 2 and [r["status"] for r in killed].count("running") == 1
    assert trials(db) == killed
    total = str(len(killed))
    resumed = run_search("--resume", "1", "--trials", total, db=db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    after = trials(db)
    assert len(after) == len(killed) and len({r["arch_key"] for r in after}) == len(killed)
    assert all(r["status"] == "complete" for r in after)
    for before in finished:  # finished trials survive untouched
        assert next(r for r in after if r["id"] == before["id"]) == before
    redone = next(r for r in after if r["id"] == next(k["id"] for k in killed if k["status"] == "running"))
    assert redone["attempts"] == 2
    straight = tmp_path / "straight.db"
    assert run_search(*common, "--trials", total, db=straight, cwd=tmp_path).returncode == 0
    assert [(r["arch_key"], r["accuracy"]) for r in after] == [(r["arch_key"], r["accuracy"]) for r in trials(straight)]


def test_a_configuration_stored_by_earlier_versions_reads_back_unchanged():
    """Databases written before the configs were split keep resuming: the stored mapping is the same."""
    from nas.search.config import SearchConfig

    stored = {
        "target_flops": 400000000, "strategy": "evolution", "trials": 40, "time_budget": 540.0, "resolution": 224,
        "proxy_resolution": 32, "epochs": 3, "batch_size": 128, "lr": 0.05, "seed": 0, "constraint": "soft",
        "w": None, "max_flops_ratio": 4.0, "dataset": "mnist", "data_dir": None, "subset": None, "val_fraction": 0.2,
        "fixed": {}, "reference": True, "threads": 2, "device": "auto",
    }
    config = SearchConfig.from_config(stored)
    # Keys added later read back as what those versions did, whatever today's defaults are.
    added = {"proxy_optimizer": "sgd", "label_smoothing": 0.0, "weight_decay": 1e-5, "prescreen": 1,
             "prescreen_score": "naswot", "stem_stride": 2, "fidelity": "full", "eta": 3, "evaluator": "proxy"}
    # A proxy-scored search never reads the supernet's settings: they read back as today's.
    supernet = {"proxy_trained": 3, "supernet_epochs": 1, "supernet_random_paths": 2, "kernel_transform": False,
                "calibration_images": 256}
    # Searches stored before latency targets were all FLOPs searches.
    latency = {"target_latency": None, "latency_runtime": "eager", "latency_batch": 1, "latency_threads": 1,
               "latency_device": "cpu", "latency_calibration": 24}
    assert config.to_config() == {**stored, **added, **supernet, **latency}
    assert (config.proxy.optimizer, config.proxy.weight_decay) == ("sgd", 1e-5)
    assert (config.reward.target_flops, config.proxy.resolution, config.task.threads, config.seed) == (
        400000000, 32, 2, 0)


def test_a_search_stored_by_the_previous_schema_resumes_after_an_upgrade(tmp_path):
    """A database one migration behind (before training_runs) resumes: the writer upgrades it, keeps every trial."""
    from alembic import command

    from db.session import alembic_config, create_db_engine, current_revision, head_revision

    db = tmp_path / "old.db"
    assert run_search("--target-flops", "400M", "--trials", "1", "--no-reference", "--strategy", "random", *TINY,
                      db=db, cwd=tmp_path).returncode == 0
    engine = create_db_engine(f"sqlite:///{db}")
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0002")
    assert current_revision(engine) == "0002"
    before = trials(db)
    resumed = run_search("--resume", "1", "--trials", "2", db=db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert current_revision(engine) == head_revision()
    after = trials(db)
    assert [{key: row[key] for key in before[0]} for row in after[:1]] == before and len(after) == 2
