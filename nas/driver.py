"""The only module of effnas that knows NNI: the model space and the strategy driver.

NNI 3.0 runs in-process here (SequentialExecutionEngine, no Node.js manager, no port). The evaluation function
receives the sample dict and returns the reward; everything else (decoding, counting, training, storing) lives
outside, in plain effnas code.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("NNI_FRAMEWORK", "none")  # keeps nni.nas.evaluator from importing PyTorch Lightning

with warnings.catch_warnings():
    # NNI 3.0 warns that newer torch classes "are not nn.Module": harmless, see ../shared/notes/nni-3.0.md.
    warnings.simplefilter("ignore")
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.nn.pytorch import ModelSpace
    from nni.nas.space import SimplifiedModelSpace
    from nni.nas.strategy import TPE, GridSearch, Random, RegularizedEvolution

from torch import nn

from nas.builder import build_model
from nas.space import SearchSpace

STRATEGIES = ("evolution", "random", "tpe", "grid")
GRID_MAX_SIZE = 100_000


class MnasModelSpace(ModelSpace):
    """The search space as an NNI model space: one `nni.choice` per stage and dimension.

    Freezing a sample gives the network the foundation's builder makes from the decoded spec.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        for label, values in space.choices():
            self.add_mutable(nni.choice(label, list(values)))

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return build_model(self.space.decode(sample))


class _SampleEvaluator(FunctionalEvaluator):
    """Hands the sample, not a built network, to the evaluation function: it decides whether to build at all
    (a duplicate or an over-budget candidate is never built)."""

    def _execute(self, model: Any) -> Any:
        return self.function(dict(model.sample), **self.arguments)


class _BudgetedEngine(SequentialExecutionEngine):
    """The sequential engine, with the budget decided by the caller (distinct trials, time, Ctrl-C)."""

    def __init__(self, budget_available: Callable[[], bool]) -> None:
        super().__init__(continue_on_failure=True)
        self._budget = budget_available

    def budget_available(self) -> bool:
        return self._budget()


def make_strategy(name: str, seed: int, trials: int, space_size: int):
    """An NNI strategy by our name, seeded so that the same seed proposes the same samples."""
    if name == "evolution":
        population = max(4, min(50, trials // 3))
        return RegularizedEvolution(
            population_size=population, sample_size=max(2, population // 3), mutation_prob=0.1, dedup=True, seed=seed
        )
    if name == "random":
        return Random(dedup=True, seed=seed)
    if name == "tpe":
        return TPE(optimize_mode="maximize", seed=seed)
    if name == "grid":
        if space_size > GRID_MAX_SIZE:
            raise ValueError(
                f"grid search needs a space of at most {GRID_MAX_SIZE:,} architectures, this one has {space_size:.3g}; "
                "pin dimensions with --fix (e.g. --fix block=mbconv_e6 --fix se=0.25)"
            )
        return GridSearch(shuffle=True, seed=seed, dedup=True)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


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

    model_space = MnasModelSpace(space)
    executable = SimplifiedModelSpace.from_model(model_space, _SampleEvaluator(evaluate))
    strategy(executable, _BudgetedEngine(budget_available))
