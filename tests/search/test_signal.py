"""The search signal (#13): hypervolume, the REINFORCE controller, zero-cost prescreening."""

from __future__ import annotations

import math

import pytest

from nas.evaluation.config import ZERO_COST_SCORES
from nas.evaluation.pareto import hypervolume, hypervolume_curve
from nas.evaluation.zero_cost import zero_cost_score
from nas.search.controller import PolicyController
from nas.search.strategies import make_strategy, run_strategy
from nas.space.search_space import SearchSpace
from nas.space.spec import efficientnet_b0
from nas.training.config import TaskConfig
from nas.training.data import load_task_data
from tests.search.test_search import TINY, straight_and_resumed


def test_hypervolume_of_a_known_front_equals_the_hand_computed_area():
    # Target box: cost up to 400 (4x a 100 target), accuracy 0..1. Front (100, 0.9), (200, 0.95), and a point
    # dominated by the first one (150, 0.8), and one over the box (500, 0.99) that adds nothing.
    # Dominated area, normalised: cost shares 0.25 and 0.5 -> 0.9 x (1 - 0.25) + (0.95 - 0.9) x (1 - 0.5) = 0.7
    costs = [100, 150, 200, 500]
    accuracies = [0.9, 0.8, 0.95, 0.99]
    assert hypervolume(costs, accuracies, 400) == pytest.approx(0.9 * 0.75 + 0.05 * 0.5)
    assert hypervolume([100], [0.9], 400) == pytest.approx(0.675)
    assert hypervolume([500], [0.99], 400) == 0.0
    assert hypervolume_curve(costs, accuracies, 400) == pytest.approx([0.675, 0.675, 0.7, 0.7])


# -- the REINFORCE controller and strategy ------------------------------------------------------------------

def test_the_policy_moves_toward_choices_with_a_higher_reward():
    choices = [("kernel", (3, 5)), ("width", (0.75, 1.0, 1.25))]
    controller = PolicyController(choices, seed=0)
    before = controller.probabilities()
    for _ in range(60):
        samples = [controller.sample() for _ in range(4)]
        # Synthetic reward: kernel 5 and width 1.25 are better.
        controller.update(samples, [0.5 + 0.2 * (s["kernel"] == 5) + 0.2 * (s["width"] == 1.25) for s in samples])
    after = controller.probabilities()
    assert before["kernel"][5] == pytest.approx(0.5) and before["width"][1.25] == pytest.approx(1 / 3)
    assert after["kernel"][5] > 0.9 and after["width"][1.25] > 0.8


def test_the_same_seed_and_rewards_give_the_same_samples_and_another_seed_others():
    runs = []
    for seed in (3, 3, 4):
        controller = PolicyController(SearchSpace(num_classes=10, in_channels=1, resolution=32).choices(), seed=seed)
        drawn = []
        for step in range(5):
            sample = controller.sample()
            drawn.append(sample)
            controller.update([sample], [0.1 * step])
        runs.append(drawn)
    assert len(runs[0]) == 5 and runs[0] == runs[1] and runs[2] != runs[0]


def test_prescreen_trains_one_candidate_per_n_scored_and_picks_the_best_score():
    space = SearchSpace(num_classes=10, in_channels=1, resolution=32)
    scored: list[dict] = []
    trained: list[dict] = []

    def score(sample):
        scored.append(sample)
        return sum(space.decode(sample).stages[i].out_channels for i in range(7))

    def evaluate(sample):
        trained.append(sample)
        return 0.5

    for name in ("random", "evolution", "reinforce"):
        scored.clear()
        trained.clear()
        strategy = make_strategy(name, 0, 6, space, prescreen=4, screen_score=score)
        run_strategy(space, strategy, evaluate, lambda: len(trained) < 6)
        # Random search draws its next proposal before it checks the budget: one group may be scored in vain.
        assert len(trained) == 6 and len(scored) in (24, 28), name
        for index, sample in enumerate(trained):
            group = scored[4 * index:4 * index + 4]
            assert score(sample) == max(score(s) for s in group), name


@pytest.mark.slow
def test_reinforce_search_resumed_reaches_the_trials_of_an_uninterrupted_run(tmp_path):
    common = ["--target-flops", "400M", "--no-reference", "--strategy", "reinforce", "--prescreen", "3", *TINY]
    straight, resumed = straight_and_resumed(common, 2, 5, tmp_path)
    expected = [(r["arch_key"], r["accuracy"], r["zero_cost_score"]) for r in straight]
    assert [(r["arch_key"], r["accuracy"], r["zero_cost_score"]) for r in resumed] == expected
    assert len(expected) == 5 and all(r[2] is not None for r in expected)


# -- zero-cost scores -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ZERO_COST_SCORES)
def test_zero_cost_scores_are_finite_repeatable_and_tell_networks_apart(name):
    data = load_task_data(TaskConfig(subset=200), 32)
    space = SearchSpace(num_classes=10, in_channels=1, resolution=32)
    small = space.decode({**space.b0_sample(), **{f"stage{i}_width": 0.75 for i in range(1, 8)}})
    b0 = space.reference_spec()
    scores = [zero_cost_score(name, spec, data) for spec in (b0, b0, small)]
    assert all(math.isfinite(s) for s in scores)
    assert scores[0] == scores[1] and scores[0] != scores[2]


def test_an_unknown_zero_cost_score_is_refused():
    with pytest.raises(ValueError, match="unknown zero-cost score"):
        zero_cost_score("magic", efficientnet_b0(), load_task_data(TaskConfig(subset=200), 32))
