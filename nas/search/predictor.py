"""Predictor-guided search, BANANAS-style: an ensemble trained online on the search's finished trials picks whom
to train next among mutations of the best ones.

White et al. (BANANAS, AAAI 2021) showed that a predictor ensemble trained on the trials so far, an acquisition
over its mean and spread, and candidates made by mutating the best trials find better architectures per
evaluation than random, evolution, TPE or REINFORCE on NAS-Bench-101 at 150 evaluations. Here the ensemble is
scikit-learn's extremely randomized trees by default: each tree is one member, so the spread comes with the fit
(bench/surrogate_fit.py measures it against random forests, LightGBM and XGBoost). An architecture is described
per stage (block type, expansion, kernel, SE ratio, skip, output channels, layers) plus log FLOPs and log params,
all counted without running the network. Training-free scores can join the features (the benchmark surrogate
uses them); the search's own predictor leaves them out: on bench/evaluation_table.json NASWOT added nothing to
the held-out tau, and the informative one, grad_norm, costs 0.7 s per candidate on a CPU thread, 24 candidates
per trial (bench/surrogate_fit.json has both measurements). Nothing is known before the first trial: the
predictor starts from scratch on any data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas.space.spec import BLOCK_TYPES, ArchSpec

Sample = dict[str, Any]
Choices = Sequence[tuple[str, Sequence[Any]]]
# Random trials before the first fit; BANANAS starts from 10 at a budget of 150, the default search has 40.
INITIAL_RANDOM = 6
# Candidates scored by the ensemble per trial trained: mutations of the best trials, and some uniform draws so
# that no region stays unexplored.
POOL_SIZE = 24
UNIFORM_SHARE = 0.25
PARENTS = 3
ENSEMBLE_SIZE = 48
# Boosted models are not ensembles by themselves: this many, each fitted on its own bootstrap sample.
BOOSTED_MEMBERS = 8
ENSEMBLE_MODELS = ("extra-trees", "random-forest", "lightgbm", "xgboost")
# Upper confidence bound: mean + UCB_WEIGHT x spread of the ensemble's predictions.
UCB_WEIGHT = 1.0


def architecture_features(spec: ArchSpec, flops: int, params: int, scores: Sequence[float] = ()) -> list[float]:
    """What the predictor reads of an architecture: per stage its block type (index), expansion, kernel, SE ratio,
    skip, output channels and layers, then log FLOPs, log params and the training-free `scores`. Read from the
    canonical network, so samples that make the same network get the same features."""
    encoded = []
    for stage in spec.canonical().stages:
        encoded += [float(BLOCK_TYPES.index(stage.block)), float(stage.expand_ratio), float(stage.kernel),
                    stage.se_ratio, float(stage.skip), float(stage.out_channels), float(stage.repeats)]
    # A score that is -inf (a degenerate network) becomes a very low finite value the trees can split on.
    finite = [score if math.isfinite(score) else -1e9 for score in map(float, scores)]
    return [*encoded, math.log(max(flops, 1)), math.log(max(params, 1)), *finite]


def sample_key(sample: Sample) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(sample.items()))


class EnsemblePredictor:
    """An ensemble regressor on (features -> value) that gives a mean and a spread per prediction. Random forests
    and extremely randomized trees: each tree is one member. LightGBM and XGBoost: BOOSTED_MEMBERS models, each
    on a bootstrap sample (the two are imported only when asked for)."""

    def __init__(self, seed: int, size: int = ENSEMBLE_SIZE, model: str = "extra-trees") -> None:
        if model not in ENSEMBLE_MODELS:
            raise ValueError(f"unknown ensemble model {model!r}; choose one of {', '.join(ENSEMBLE_MODELS)}")
        self.model = model
        self._seed = seed
        self._size = size
        self._members: list[Any] = []

    def _forest(self) -> Any:
        from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

        forest = ExtraTreesRegressor if self.model == "extra-trees" else RandomForestRegressor
        return forest(n_estimators=self._size, min_samples_leaf=1, max_features=0.6, random_state=self._seed,
                      n_jobs=1)

    def _boosted(self, seed: int) -> Any:
        options = dict(n_estimators=200, learning_rate=0.05, subsample=0.8, colsample_bytree=0.6, n_jobs=1,
                       random_state=seed)
        if self.model == "lightgbm":
            from lightgbm import LGBMRegressor

            return LGBMRegressor(num_leaves=15, min_child_samples=5, subsample_freq=1, verbose=-1, **options)
        from xgboost import XGBRegressor

        return XGBRegressor(max_depth=4, **options)

    def fit(self, features: np.ndarray, targets: np.ndarray) -> EnsemblePredictor:
        if self.model in ("extra-trees", "random-forest"):
            self._members = list(self._forest().fit(features, targets).estimators_)
            return self
        rng = np.random.default_rng(self._seed)
        self._members = []
        for member in range(BOOSTED_MEMBERS):
            rows = rng.integers(0, len(targets), len(targets))
            self._members.append(self._boosted(self._seed * BOOSTED_MEMBERS + member).fit(features[rows],
                                                                                          targets[rows]))
        return self

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the members' predictions, per row."""
        members = np.stack([member.predict(features) for member in self._members])
        return members.mean(axis=0), members.std(axis=0)


def upper_confidence_bound(mean: np.ndarray, spread: np.ndarray, weight: float = UCB_WEIGHT) -> np.ndarray:
    return mean + weight * spread


class PredictorGuidedProposer:
    """Proposes the next samples to train from the trials so far; the NNI strategy around it only submits them.

    `describe(sample)` gives a sample's features (`architecture_features` of the network it makes).
    The same seed and the same results give the same proposals, so a resumed search replays its trials.
    """

    def __init__(self, choices: Choices, seed: int, describe: Callable[[Sample], Sequence[float]],
                 initial_random: int = INITIAL_RANDOM, pool_size: int = POOL_SIZE) -> None:
        self.choices = [(label, tuple(values)) for label, values in choices]
        self._free = [(label, values) for label, values in self.choices if len(values) > 1]
        self._rng = random.Random(seed)
        self._seed = seed
        self._describe = describe
        self._initial = initial_random
        self._pool_size = pool_size
        self.results: dict[tuple[tuple[str, Any], ...], tuple[Sample, float]] = {}
        self._proposed: set[tuple[tuple[str, Any], ...]] = set()

    def _uniform(self) -> Sample:
        return {label: self._rng.choice(values) for label, values in self.choices}

    def _mutant(self, parent: Sample) -> Sample:
        """The parent with one decision changed (BANANAS mutates one operation or edge)."""
        child = dict(parent)
        label, values = self._rng.choice(self._free)
        child[label] = self._rng.choice([v for v in values if v != parent[label]])
        return child

    def _new(self, draw: Callable[[], Sample], attempts: int = 50) -> Sample | None:
        for _ in range(attempts):
            sample = draw()
            if sample_key(sample) not in self._proposed:
                return sample
        return None

    def features(self, sample: Sample) -> list[float]:
        return list(self._describe(sample))

    def _pool(self) -> list[Sample]:
        best = sorted(self.results.values(), key=lambda entry: -entry[1])[:PARENTS]
        uniform = max(1, round(self._pool_size * UNIFORM_SHARE))
        pool: dict[tuple[tuple[str, Any], ...], Sample] = {}
        for index in range(self._pool_size):
            if index < self._pool_size - uniform:
                parent = best[index % len(best)][0]
                sample = self._new(lambda parent=parent: self._mutant(parent))
            else:
                sample = self._new(self._uniform)
            if sample is not None:
                pool[sample_key(sample)] = sample
        return list(pool.values())

    def propose(self, count: int) -> list[Sample]:
        """Up to `count` new samples: uniform draws for the first trials, then the pool's best by the acquisition."""
        if len(self.results) < self._initial or not self._free:
            chosen = [sample for sample in (self._new(self._uniform) for _ in range(count)) if sample is not None]
        else:
            pool = self._pool()
            if not pool:
                return []
            trained = list(self.results.values())
            model = EnsemblePredictor(self._seed + len(trained)).fit(
                np.array([self.features(sample) for sample, _ in trained]),
                np.array([reward for _, reward in trained]),
            )
            mean, spread = model.predict(np.array([self.features(sample) for sample in pool]))
            order = np.argsort(-upper_confidence_bound(mean, spread), kind="stable")
            chosen = [pool[index] for index in order[:count]]
        for sample in chosen:
            self._proposed.add(sample_key(sample))
        return chosen

    def record(self, sample: Sample, reward: float) -> None:
        self.results[sample_key(sample)] = (dict(sample), float(reward))
