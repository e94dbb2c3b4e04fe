"""`--strategy predictor`: the ensemble, the proposals, and a real search that resumes to the same trials."""

import random
import statistics

import numpy as np
import pytest
from scipy.stats import kendalltau
from test_search import TINY, straight_and_resumed

from nas.search.predictor import (
    INITIAL_RANDOM,
    EnsemblePredictor,
    PredictorGuidedProposer,
    architecture_features,
    sample_key,
)
from nas.space.search_space import SearchSpace

SPACE = SearchSpace(num_classes=10, in_channels=1, resolution=32)
CHOICES = SPACE.choices()


def uniform(rng: random.Random) -> dict:
    return {label: rng.choice(values) for label, values in CHOICES}


def describe(sample: dict) -> list[float]:
    return architecture_features(SPACE.decode(sample), 1, 1)


def synthetic_reward(sample: dict) -> float:
    """A reward with structure, as architectures have: wide early stages and 5x5 kernels pay, extra layers cost."""
    return sum(sample[f"stage{i}_width"] * (8 - i) + (sample[f"stage{i}_kernel"] == 5) * 0.5
               - 0.3 * abs(sample[f"stage{i}_layers"]) for i in range(1, 8))


def test_the_ensemble_ranks_unseen_architectures_and_knows_where_it_is_unsure():
    rng = random.Random(0)
    samples = [uniform(rng) for _ in range(160)]
    features = np.array([describe(s) for s in samples])
    rewards = np.array([synthetic_reward(s) for s in samples])
    model = EnsemblePredictor(seed=0).fit(features[:120], rewards[:120])
    mean, spread = model.predict(features[120:])
    assert kendalltau(mean, rewards[120:]).statistic > 0.5
    _, seen_spread = model.predict(features[:120])
    assert spread.mean() > seen_spread.mean()


def best_after(proposer_or_rng, evaluations: int) -> float:
    best = float("-inf")
    if isinstance(proposer_or_rng, random.Random):
        for _ in range(evaluations):
            best = max(best, synthetic_reward(uniform(proposer_or_rng)))
        return best
    for _ in range(evaluations):
        [sample] = proposer_or_rng.propose(1)
        reward = synthetic_reward(sample)
        proposer_or_rng.record(sample, reward)
        best = max(best, reward)
    return best


def test_guided_proposals_find_better_architectures_than_uniform_draws_in_the_same_budget():
    guided = [best_after(PredictorGuidedProposer(CHOICES, seed, describe), 50) for seed in range(6)]
    uniform_best = [best_after(random.Random(seed), 50) for seed in range(6)]
    assert statistics.median(guided) > statistics.median(uniform_best)
    assert statistics.mean(guided) > statistics.mean(uniform_best)


def test_proposals_are_new_repeatable_and_start_uniform():
    def run(seed):
        proposer = PredictorGuidedProposer(CHOICES, seed, describe)
        proposed = []
        for _ in range(12):
            batch = proposer.propose(2)
            for sample in batch:
                proposer.record(sample, synthetic_reward(sample))
            proposed += batch
        return proposed

    first = run(3)
    assert [sample_key(s) for s in first] == [sample_key(s) for s in run(3)]
    assert len({sample_key(s) for s in first}) == len(first) == 24
    assert [sample_key(s) for s in first] != [sample_key(s) for s in run(4)]
    # After the uniform start, most proposals are one decision away from an earlier, better trial.
    later = first[INITIAL_RANDOM + 2:]
    near = [s for s in later if any(sum(s[k] != p[k] for k in s) == 1 for p in first[:first.index(s)])]
    assert len(near) >= len(later) // 2


@pytest.mark.slow
def test_a_predictor_search_resumed_reaches_the_trials_of_an_uninterrupted_run(tmp_path):
    common = ["--target-flops", "400M", "--no-reference", "--strategy", "predictor", *TINY]
    straight, resumed = straight_and_resumed(common, 7, 9, tmp_path)
    assert [(r["arch_key"], r["accuracy"]) for r in resumed] == [(r["arch_key"], r["accuracy"]) for r in straight]
    assert len({r["arch_key"] for r in straight}) == 9
