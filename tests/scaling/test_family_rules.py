"""Scaling rules, resolutions that follow the rule's FLOPs, grid coefficients from short trainings, a family
trained as one resumable queue of (member, seed) runs, and the comparison of trained families."""

import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import NO_LATENCY, mnist_idx, run_main
from nas.space.flops import count_flops
from nas.space.spec import decode, efficientnet_b0, to_json
from scaling.compound import (
    DEFAULT_RULE,
    DEFAULT_RULE_BASIS,
    DEFAULT_RULE_BUDGET,
    PAPER_COEFFICIENTS,
    RULES,
    compound_members,
    flops_factor,
    rule_coefficients,
    scaled_spec,
)

TINY = decode(["r1_k3_s11_e1_i16_o16_se0.25", "r1_k3_s22_e3_i16_o24", "r1_k3_s22_e3_i24_o32_se0.25"],
              stem_channels=16, head_channels=64, resolution=32, num_classes=10)
B0_AT_32 = replace(efficientnet_b0(), resolution=32, stem_stride=1)
ROOT = Path(__file__).resolve().parents[2]


def cli(module, *args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "EFFNAS_DB": ""})


def dump(db):
    with sqlite3.connect(db) as c:
        return {table: c.execute(f"select * from {table}").fetchall()
                for (table,) in c.execute("select name from sqlite_master where type='table'")}


def runs(db):
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("select * from training_runs order by id")]


@pytest.mark.parametrize("baseline", [efficientnet_b0(), B0_AT_32], ids=["224px", "32px"])
@pytest.mark.parametrize("rule", ["width", "depth", "resolution"])
def test_a_single_dimension_family_scales_only_its_dimension_to_about_2_to_the_phi(baseline, rule):
    members = compound_members(baseline, *rule_coefficients(rule, PAPER_COEFFICIENTS), 3)
    for member in members:
        scaled = {"width": member.width, "depth": member.depth, "resolution": member.resolution / baseline.resolution}
        for dimension, value in scaled.items():
            if dimension != rule:
                assert value == 1.0, (rule, member.name, dimension, value)
        assert scaled[rule] > 1.0 or member.phi == 0
        # Within 20 % of 2^phi: the rounding of channels, repeats and pixels is all that separates them.
        assert abs(math.log(member.flops_ratio / 2**member.phi)) <= math.log(1.2), (rule, member.name,
                                                                                     member.flops_ratio)


def test_at_a_32px_base_member_resolutions_follow_the_rules_flops_better_than_multiples_of_8():
    """Rounded to multiples of 8 (the rule before), B1 and B2 of a 32 px base both trained at 40 px."""
    alpha, beta, gamma = PAPER_COEFFICIENTS
    members = compound_members(B0_AT_32, alpha, beta, gamma, 3)
    strictly_better = 0
    for member in members[1:]:
        promise = flops_factor(alpha, beta, gamma) ** member.phi
        by_eight = max(8, int(32 * gamma**member.phi / 8 + 0.5) * 8)
        old = count_flops(scaled_spec(B0_AT_32, member.width, member.depth, by_eight, 0.2)) / members[0].flops
        new_error, old_error = abs(math.log(member.flops_ratio / promise)), abs(math.log(old / promise))
        assert new_error <= old_error + 1e-12, (member.name, member.flops_ratio, old, promise)
        strictly_better += new_error < old_error - 1e-6
        assert abs(math.log(member.flops_ratio / promise)) <= math.log(1.25), (member.name, member.flops_ratio)
    assert strictly_better >= 1
    assert members[1].resolution != members[2].resolution  # B1 and B2 no longer share a resolution


def test_grow_stores_the_rule_and_reports_flops_against_2_to_the_phi(tmp_path):
    db = tmp_path / "r.db"
    for rule in RULES:
        result = cli("scaling.grow", "--baseline", "efficientnet-b0", "--resolution", "32", "--rule", rule,
                     "--phi-max", "2", "--dataset", "fashion-mnist", *NO_LATENCY, "--db", str(db), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "FLOPs/B0" in result.stdout and "2^phi" in result.stdout
        assert "train above the data's 28 px images" in result.stdout  # 32 px and up only upsample Fashion-MNIST
    shown = json.loads(cli("scaling.grow", "--baseline", "efficientnet-b0", "--rule", "depth", "--phi-max", "1",
                           "--format", "json", *NO_LATENCY, "--db", str(db), cwd=tmp_path).stdout)
    assert shown["rule"] == "depth" and shown["coefficients"]["source"] == "fixed"
    assert [m["depth"] for m in shown["members"]] == [1.0, 2.0]
    assert [m["ideal_ratio"] for m in shown["members"]] == [1.0, 2.0]
    with sqlite3.connect(db) as c:
        assert [r for (r,) in c.execute("select rule from families order by id")] == [*RULES, "depth"]


def test_max_resolution_native_keeps_members_from_upsampling_and_says_what_it_costs_in_flops(tmp_path):
    """Fashion-MNIST stores 28 px images and B0 trains at 32: capped at native, no member grows its resolution,
    depth and width still grow, and the table says FLOPs fall short of the rule."""
    db = tmp_path / "cap.db"
    base = ["--baseline", "efficientnet-b0", "--resolution", "32", "--phi-max", "3", "--dataset", "fashion-mnist",
            *NO_LATENCY, "--db", str(db)]
    free = json.loads(cli("scaling.grow", *base, "--format", "json", cwd=tmp_path).stdout)
    result = cli("scaling.grow", *base, "--max-resolution", "native", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "below B0's 32 px" in result.stderr and "at most 32 px (--max-resolution)" in result.stdout
    assert "--max-resolution native keeps" not in result.stdout
    capped = json.loads(cli("scaling.grow", *base, "--max-resolution", "native", "--format", "json",
                            cwd=tmp_path).stdout)
    assert capped["config"]["max_resolution"] == 32
    assert [m["resolution"] for m in capped["members"]] == [32, 32, 32, 32]
    assert max(m["resolution"] for m in free["members"]) > 32
    for free_member, member in zip(free["members"][1:], capped["members"][1:]):
        assert (member["width"], member["depth"]) == (free_member["width"], free_member["depth"])
        if free_member["resolution"] > 32:
            assert member["flops"] < free_member["flops"] and member["flops_ratio"] < member["ideal_ratio"]
        else:
            assert member["flops"] == free_member["flops"]
    hint = cli("scaling.grow", *base, cwd=tmp_path)
    assert "--max-resolution native keeps every member at 32 px or below" in hint.stdout
    at_40 = compound_members(B0_AT_32, *PAPER_COEFFICIENTS, 3, max_resolution=40)
    assert max(m.resolution for m in at_40) == 40 and at_40[1].resolution < 40


def test_the_default_rule_is_the_one_the_family_bench_measured_best_at_its_longest_budget():
    """scaling.grow's default follows bench/family_scaling.json: when a longer budget changes the winner, the
    default (and the line it prints) must change with it."""
    chosen = json.loads((ROOT / "bench" / "family_scaling.json").read_text())["findings"]["default rule"]
    assert (DEFAULT_RULE, DEFAULT_RULE_BUDGET) == (chosen["rule"], chosen["budget_label"])
    docs = (ROOT / "docs" / "how-to" / "scaling.md").read_text()
    assert f"default rule is **{DEFAULT_RULE}" in docs and DEFAULT_RULE_BUDGET in docs


def test_the_line_grow_prints_about_its_default_quotes_the_bench_figures():
    """The basis names each ranked rule's B2 accuracy and seed count as the JSON holds them, so that a rerun that
    moves a figure cannot leave the printed line stale."""
    ranking = json.loads((ROOT / "bench" / "family_scaling.json").read_text())["findings"]["default rule"]["ranking"]
    for row in ranking:
        assert f"{row['mean']:.4f} +- {row['sd']:.4f}" in DEFAULT_RULE_BASIS, row["rule"]
    seeds = sorted({row["seeds"] for row in ranking})
    assert (f"{seeds[0]} seeds each" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds") in DEFAULT_RULE_BASIS


@pytest.mark.parametrize("args,message", [
    (["--rule", "diagonal"], "invalid choice"),
    (["--rule", "width", "--coefficients", "paper"], "--coefficients is for the compound rule"),
    (["--phi-max", "9"], "up to 7 (B7)"),
    (["--phi-max", "0"], "at least 1"),
    (["--coefficients", "grid", "--grid-epochs", "500"], "--grid-epochs must be between 1 and 50"),
    (["--coefficients", "grid", "--grid-seeds", "0,x"], "cannot read --grid-seeds"),
    (["--coefficients", "grid", "--grid-seeds", "1,1"], "repeats a seed"),
    (["--coefficients", "grid", "--grid-step", "0.01", "--grid-tolerance", "0.5"], "grid points"),
    (["--rule", "resolution", "--max-resolution", "native"], "every member at B0's size"),
    (["--coefficients", "grid", "--max-resolution", "40"], "the grid fits gamma"),
    (["--max-resolution", "31"], "pixels (at least 32) or native"),
    (["--max-resolution", "native"], "needs the data set"),
])
def test_grow_bad_input_is_one_line_exit_2_and_the_database_unchanged(tmp_path, args, message):
    db = tmp_path / "b.db"
    assert run_main("scaling.grow", "--baseline", "efficientnet-b0", "--phi-max", "1", *NO_LATENCY, "--db", str(db),
                    cwd=tmp_path).returncode == 0
    before = dump(db)
    result = run_main("scaling.grow", "--baseline", "efficientnet-b0", *args, "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert dump(db) == before


@pytest.mark.slow
def test_grid_coefficients_scored_by_short_final_trainings_pick_the_best_validation_point(tmp_path):
    db = tmp_path / "g.db"
    arch = tmp_path / "tiny.json"
    arch.write_text(to_json(TINY))
    digits = mnist_idx(tmp_path / "digits", train=1000, test=100)
    result = cli("scaling.grow", "--arch", str(arch), "--coefficients", "grid", "--grid-scoring", "training",
                 "--grid-step", "0.2", "--grid-tolerance", "0.05", "--grid-epochs", "1", "--grid-subset", "200",
                 "--grid-val-images", "200", "--dataset", "idx", "--data-dir", str(digits), "--phi-max", "2",
                 "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "scored by short final trainings (1 epochs on 200 images, seeds 0" in result.stdout
    chosen = [line for line in result.stdout.splitlines() if line.startswith("*")]
    assert len(chosen) == 1
    with sqlite3.connect(db) as c:
        points = c.execute("select alpha, beta, gamma, accuracy from scaling_grid_points").fetchall()
        family = c.execute("select alpha, beta, gamma, config from families").fetchone()
    assert len(points) == 5 and all(0.0 <= p[3] <= 1.0 for p in points)
    assert family[:3] == max(points, key=lambda p: p[3])[:3]
    assert json.loads(family[3])["grid_scoring"]["scored_by"] == "final-training"


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    """A width-rule family of a tiny network, B0 and B1 each trained with seeds 0 and 1 as one queue that is
    killed (SIGKILL) in its second run and then started again with the same command."""
    folder = tmp_path_factory.mktemp("queue")
    db = folder / "q.db"
    arch = folder / "tiny.json"
    arch.write_text(to_json(TINY))
    digits = mnist_idx(folder / "digits", train=1200, test=300)
    for rule in ("compound", "width"):
        grown = cli("scaling.grow", "--arch", str(arch), "--rule", rule, "--phi-max", "1", "--db", str(db),
                    cwd=folder)
        assert grown.returncode == 0, grown.stderr
    recipe = ["--dataset", "idx", "--data-dir", str(digits), "--subset", "400", "--val-images", "200", "--epochs",
              "3", "--threads", "1", "--db", str(db), "--out-dir", str(folder / "runs")]
    command = ["scaling.train", "--family", "2", "--seeds", "0,1", *recipe]
    proc = subprocess.Popen([sys.executable, "-m", *command], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "EFFNAS_DB": ""})
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            assert proc.poll() is None, "the queue ended before it could be killed"
            time.sleep(0.2)
            try:
                stored = runs(db) if db.exists() else []
            except sqlite3.OperationalError:
                continue
            if len(stored) == 4 and stored[1]["epochs_done"] >= 1:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = runs(db)
    again = cli(*command, "--format", "json", cwd=folder)
    assert again.returncode == 0, again.stderr
    once_more = cli(*command, "--format", "json", cwd=folder)
    assert once_more.returncode == 0, once_more.stderr
    # The comparison's other family: the compound family's B0 (the same network) at the same recipe, one seed.
    other = cli("scaling.train", "--family", "1", "--members", "B0", "--seeds", "0", *recipe, cwd=folder)
    assert other.returncode == 0, other.stderr
    return {"db": db, "folder": folder, "killed": killed, "again": again, "once_more": once_more}


@pytest.mark.slow
def test_a_killed_queue_started_again_finishes_every_run_exactly_once(queue):
    killed, after = queue["killed"], runs(queue["db"])
    assert killed[0]["status"] == "complete" and killed[1]["status"] == "running"
    assert 1 <= killed[1]["epochs_done"] < 3
    family_runs = [r for r in after if r["family_id"] == 2]
    assert len(family_runs) == 4 and all(r["status"] == "complete" for r in family_runs)
    pairs = [(r["member"], json.loads(r["recipe"])["seed"]) for r in family_runs]
    assert sorted(pairs) == [("B0", 0), ("B0", 1), ("B1", 0), ("B1", 1)]
    continued = next(r for r in family_runs if r["id"] == killed[1]["id"])
    curve = json.loads(continued["curve"])
    assert [p["epoch"] for p in curve] == [1, 2, 3]
    assert curve[:killed[1]["epochs_done"]] == json.loads(killed[1]["curve"])  # kept, not trained again
    assert f"continuing after epoch {killed[1]['epochs_done']}" in queue["again"].stderr
    assert "1 of 4 runs already complete" in queue["again"].stderr
    assert "4 of 4 runs already complete" in queue["once_more"].stderr
    assert "nothing left to train" in queue["once_more"].stderr
    assert sorted(r["run_id"] for r in json.loads(queue["once_more"].stdout)) == [r["id"] for r in family_runs]


@pytest.mark.slow
def test_the_comparison_aggregates_seeds_and_marks_the_front(queue):
    result = cli("scaling.compare", "--format", "json", "--db", str(queue["db"]), cwd=queue["folder"])
    assert result.returncode == 0, result.stderr
    [comparison] = json.loads(result.stdout)
    stored = {}
    for run in runs(queue["db"]):
        stored.setdefault((run["family_id"], run["member"]), []).append(run["test_accuracy"])
    assert {(m["family_id"], m["member"]) for m in comparison["members"]} == set(stored)
    for member in comparison["members"]:
        accuracies = stored[(member["family_id"], member["member"])]
        assert sorted(member["test_accuracies"]) == sorted(accuracies)
        assert member["mean"] == pytest.approx(statistics.fmean(accuracies))
        assert member["sd"] == (pytest.approx(statistics.stdev(accuracies)) if len(accuracies) > 1 else None)
    front = [m for m in comparison["members"] if m["on_front"]]
    assert front and all(not (o["flops"] <= f["flops"] and o["mean"] > f["mean"])
                         for f in front for o in comparison["members"])
    table = cli("scaling.compare", "--db", str(queue["db"]), cwd=queue["folder"]).stdout
    assert "+-" in table and "(1 seed)" in table and "multiply-accumulates" in table
    assert comparison["budget"] == "400 training images x 3 epochs" and comparison["budget"] in table


@pytest.mark.slow
def test_runs_at_another_budget_are_compared_apart_and_labelled_with_their_budget(queue, tmp_path):
    db = tmp_path / "budgets.db"
    with sqlite3.connect(queue["db"]) as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    digits = mnist_idx(tmp_path / "digits", train=1200, test=300)
    shorter = cli("scaling.train", "--family", "1", "--members", "B0", "--seeds", "0", "--dataset", "idx",
                  "--data-dir", str(digits), "--subset", "300", "--val-images", "200", "--epochs", "1", "--threads",
                  "1", "--db", str(db), "--out-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert shorter.returncode == 0, shorter.stderr
    comparisons = json.loads(cli("scaling.compare", "--format", "json", "--db", str(db), cwd=tmp_path).stdout)
    assert sorted(c["budget"] for c in comparisons) == ["300 training images x 1 epoch",
                                                        "400 training images x 3 epochs"]
    short = next(c for c in comparisons if c["budget"].startswith("300"))
    assert [(m["family_id"], m["member"], m["seeds"]) for m in short["members"]] == [(1, "B0", [0])]
    table = cli("scaling.compare", "--db", str(db), cwd=tmp_path).stdout
    assert table.startswith("2 comparisons, one per training budget") and "not comparable" in table
    assert "300 training images x 1 epoch (" in table and "400 training images x 3 epochs (" in table


@pytest.mark.slow
def test_train_bad_seeds_and_members_are_one_line_and_the_database_unchanged(queue):
    before = dump(queue["db"])
    for args, message in ((["--family", "2", "--seeds", "0,x"], "cannot read --seeds"),
                          (["--family", "2", "--seeds", "0,0"], "repeats a seed"),
                          (["--family", "2", "--members", "B7"], "has no member B7")):
        result = run_main("scaling.train", *args, "--dataset", "fashion-mnist", "--db", str(queue["db"]),
                          cwd=queue["folder"])
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert dump(queue["db"]) == before


@pytest.mark.slow
def test_export_names_each_members_run_seed_and_test_accuracy(queue, tmp_path):
    out = tmp_path / "family"
    result = cli("scaling.export", "--family", "2", "--out", str(out), "--files", "json,safetensors", "--db",
                 str(queue["db"]), cwd=queue["folder"])
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "family.json").read_text())
    assert manifest["rule"] == "width"
    for member in manifest["members"]:
        candidates = [r for r in runs(queue["db"]) if r["family_id"] == 2 and r["member"] == member["name"]]
        best = max(candidates, key=lambda r: (r["val_accuracy"], r["id"]))
        assert member["trained"] and member["run_id"] == best["id"]
        assert member["seed"] == json.loads(best["recipe"])["seed"]
        assert member["test_accuracy"] == best["test_accuracy"]
        assert (out / member["files"]["safetensors"]).is_file()
        test = member["contract"]["accuracy"]["test"]
        by_id = {r["id"]: r for r in candidates}
        assert best["id"] in test["run_ids"] and set(test["run_ids"]) <= set(by_id) and len(test["seeds"]) == 2
        assert test["mean"] == pytest.approx(sum(by_id[i]["test_accuracy"] for i in test["run_ids"]) / 2)


def test_grow_from_a_search_takes_the_reward_winner_or_with_pick_accuracy_the_best_network_within_the_target(
        tmp_path):
    from db import open_database, trials
    from effnas.records import TrialRole
    from nas.evaluation.config import RewardConfig
    from nas.search.config import SearchConfig
    from nas.search.study import create_search, new_trial
    from nas.space.search_space import SearchSpace

    db_path = tmp_path / "s.db"
    db = open_database(f"sqlite:///{db_path}")
    config = SearchConfig(reward=RewardConfig(target_flops=8_000_000, resolution=32), stem_stride=2)
    search_id = create_search(db, config, None)
    space = SearchSpace(10, 1, 32, stem_stride=2)
    wide = space.decode({**space.b0_sample(), **{f"stage{i}_width": 1.25 for i in range(1, 8)}})
    narrow = space.decode({**space.b0_sample(), **{f"stage{i}_width": 0.75 for i in range(1, 8)}})
    # The wide network is over the 8M target and wins the soft reward; the narrow one is within it.
    costs = [count_flops(spec) for spec in (wide, narrow)]
    assert costs[0] > 8_000_000 >= costs[1]
    trials.add_completed_trials(db, search_id, [
        (new_trial(wide, TrialRole.CANDIDATE, None, costs[0], 1), 0.90, 0.88),
        (new_trial(narrow, TrialRole.CANDIDATE, None, costs[1], 1), 0.80, 0.81),
    ])
    for pick, number, spec in (("reward", 0, wide), ("accuracy", 1, narrow)):
        result = cli("scaling.grow", "--search", str(search_id), "--pick", pick, "--phi-max", "1", "--format",
                     "json", "--db", str(db_path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"baseline: search {search_id}, trial {number}" in result.stderr
        other = "accuracy" if pick == "reward" else "reward"
        assert f"--pick {other} takes" in result.stderr
        family = json.loads(result.stdout)
        assert family["members"][0]["flops"] == count_flops(spec)
