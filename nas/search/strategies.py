"""The search space as NNI's model space, the strategies by effnas's names, and running one in this process.

`run_strategy` runs NNI 3.0 in-process (SequentialExecutionEngine, no Node.js manager, no port): it is given an
evaluation function that receives the sample dict and returns the reward. `nas.search.trial_processes` runs the
same strategies on NNI's training-service engine. Everything else (decoding, counting, training, storing) lives
outside, in plain effnas code; this module imports none of it but the search space and the strategies' own logic
(the REINFORCE policy, the predictor). NNI's private names are used only in `nas.search.nni_internals`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

# nni_internals imports NNI first: it checks NNI's version and keeps NNI's known import warnings out.
from nas.search.nni_internals import InProcessTPE, SampleEvaluator

# isort: split
import nni
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import ExecutableModelSpace, SimplifiedModelSpace
from nni.nas.strategy import GridSearch, Random, RegularizedEvolution, Strategy
from nni.nas.strategy.utils import DuplicationError
from torch import nn

from nas.search.config import check_strategy
from nas.search.controller import PolicyController
from nas.search.predictor import PredictorGuidedProposer
from nas.space.builder import build_model
from nas.space.search_space import SearchSpace


class MnasModelSpace(ModelSpace):
    """The search space as an NNI model space: one `nni.choice` per stage and dimension.

    Freezing a sample gives the network the foundation's builder makes from the decoded spec. The task's facts
    are plain values, because NNI sends this object's arguments to trial processes as JSON.
    """

    def __init__(self, num_classes: int, in_channels: int, resolution: int, fixed: dict[str, Any],
                 stem_stride: int = 2) -> None:
        super().__init__()
        self.space = SearchSpace(num_classes=num_classes, in_channels=in_channels, resolution=resolution,
                                 fixed=dict(fixed), stem_stride=stem_stride)
        for label, values in self.space.choices():
            self.add_mutable(nni.choice(label, list(values)))

    @classmethod
    def of(cls, space: SearchSpace) -> MnasModelSpace:
        return cls(space.num_classes, space.in_channels, space.resolution, dict(space.fixed), space.stem_stride)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return build_model(self.space.decode(sample))


class _BudgetedEngine(SequentialExecutionEngine):
    """The sequential engine, with the budget decided by the caller (distinct trials, time, Ctrl-C)."""

    def __init__(self, budget_available: Callable[[], bool]) -> None:
        super().__init__(continue_on_failure=True)
        self._budget = budget_available

    def budget_available(self) -> bool:
        return self._budget()


ScreenScore = Callable[[dict[str, Any]], float]


def _best_of(draw: Callable[[], ExecutableModelSpace], count: int, score: ScreenScore) -> ExecutableModelSpace:
    """The best of `count` draws by the training-free `score` (the first of equals); draws that repeat an earlier
    proposal are skipped, and DuplicationError tells the strategy's retry loop when all of them did."""
    candidates = []
    for _ in range(count):
        try:
            candidates.append(draw())
        except DuplicationError:
            continue
    if not candidates:
        raise DuplicationError("every prescreened candidate was proposed before")
    scores = [score(dict(model.sample)) for model in candidates]
    return candidates[scores.index(max(scores))]


class PrescreenedRandom(Random):
    """Random search that draws `count` samples per trial and proposes the one with the best training-free score."""

    def __init__(self, count: int, score: ScreenScore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._count, self._score = count, score

    def random(self, model_space: ExecutableModelSpace) -> ExecutableModelSpace:
        return _best_of(lambda: super(PrescreenedRandom, self).random(model_space), self._count, self._score)


class PrescreenedEvolution(RegularizedEvolution):
    """Regularized evolution whose every new individual (random or mutant) is the best of `count` by the
    training-free score; the population only ever holds trained individuals."""

    def __init__(self, count: int, score: ScreenScore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._count, self._score = count, score

    def random(self) -> ExecutableModelSpace:
        return _best_of(super().random, self._count, self._score)

    def new_individual(self) -> ExecutableModelSpace:
        return _best_of(super().new_individual, self._count, self._score)


class Reinforce(Strategy):
    """MnasNet's search on NNI's strategy interface: a policy (`PolicyController`) proposes `batch` candidates,
    the engine trains them, the policy learns from their rewards, and again. With prescreening, each proposal is
    the best of `count` policy samples by the training-free score."""

    def __init__(self, choices: list[tuple[str, tuple[Any, ...]]], seed: int, batch: int = 1, count: int = 1,
                 score: ScreenScore | None = None) -> None:
        super().__init__()
        self.controller = PolicyController(choices, seed)
        self._batch, self._count, self._score = batch, count, score

    def _propose(self) -> ExecutableModelSpace:
        draw = lambda: self.model_space.freeze(self.controller.sample())  # noqa: E731
        return draw() if self._count == 1 else _best_of(draw, self._count, self._score)

    def _run(self) -> None:  # NNI's Strategy.run calls it: the method a strategy implements
        while True:
            models = []
            while len(models) < self._batch and self.wait_for_resource():
                model = self._propose()
                self.engine.submit_models(model)
                models.append(model)
            if not models:
                return
            self.engine.wait_models(*models)
            scored = [model for model in models if model.metric is not None]
            self.controller.update([dict(model.sample) for model in scored], [float(model.metric) for model in scored])


class PredictorGuided(Strategy):
    """BANANAS-style search on NNI's strategy interface (`nas.search.predictor`): an ensemble trained on the
    trials so far chooses `batch` candidates among mutations of the best ones, the engine trains them, and again.
    Only the chosen candidates are trained and stored."""

    def __init__(self, choices: list[tuple[str, tuple[Any, ...]]], seed: int,
                 describe: Callable[[dict[str, Any]], list[float]], batch: int = 1) -> None:
        super().__init__()
        self.proposer = PredictorGuidedProposer(choices, seed, describe)
        self._batch = batch

    def _run(self) -> None:
        while self.wait_for_resource():
            models = []
            for sample in self.proposer.propose(self._batch):
                if models and not self.wait_for_resource():
                    break
                model = self.model_space.freeze(sample)
                self.engine.submit_models(model)
                models.append(model)
            if not models:
                return
            self.engine.wait_models(*models)
            for model in models:
                self.proposer.record(dict(model.sample), 0.0 if model.metric is None else float(model.metric))


def make_strategy(name: str, seed: int, trials: int, space: SearchSpace, *, batch: int = 1, prescreen: int = 1,
                  screen_score: ScreenScore | None = None,
                  describe: Callable[[dict[str, Any]], list[float]] | None = None):
    """An NNI strategy by our name, seeded so that the same seed proposes the same samples; ValueError for a
    strategy that cannot search this space. `batch` candidates train at once (reinforce and predictor learn
    after each batch). With `prescreen` > 1, each trained candidate is the best of `prescreen` proposals by
    `screen_score(sample)`. `describe(sample)` gives the predictor its features beyond the decisions."""
    check_strategy(name, space.size(), prescreen)
    if name == "predictor":
        return PredictorGuided(space.choices(), seed, describe, batch=batch)
    screened = {"count": prescreen, "score": screen_score} if prescreen > 1 else None
    if name == "reinforce":
        return Reinforce(space.choices(), seed, batch=batch, **(screened or {}))
    if name == "evolution":
        population = max(4, min(50, trials // 3))
        options = dict(population_size=population, sample_size=max(2, population // 3), mutation_prob=0.1,
                       dedup=True, seed=seed)
        return PrescreenedEvolution(**screened, **options) if screened else RegularizedEvolution(**options)
    if name == "random":
        return PrescreenedRandom(**screened, dedup=True, seed=seed) if screened else Random(dedup=True, seed=seed)
    if name == "tpe":
        return InProcessTPE(optimize_mode="maximize", seed=seed)
    return GridSearch(shuffle=True, seed=seed, dedup=True)


def route_nni_logs(log_file: Path | None, verbose: bool) -> None:
    """NNI logs go to `log_file` (and to the terminal only with `verbose`)."""
    logger = logging.getLogger("nni")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    if verbose:
        logger.addHandler(logging.StreamHandler())


def run_strategy(
    space: SearchSpace,
    strategy: Any,
    evaluate_sample: Callable[[dict[str, Any]], float],
    budget_available: Callable[[], bool],
) -> None:
    """Explore `space` with `strategy` until `budget_available()` turns false or the strategy has nothing left.

    `evaluate_sample(sample)` returns the reward that the strategy maximises.
    """

    def evaluate(sample: dict[str, Any]) -> None:
        nni.report_final_result(float(evaluate_sample(sample)))

    model_space = MnasModelSpace.of(space)
    executable = SimplifiedModelSpace.from_model(model_space, SampleEvaluator(evaluate))
    strategy(executable, _BudgetedEngine(budget_available))


