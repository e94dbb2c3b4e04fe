"""The evaluator: one spec in, one outcome out (FLOPs and params, rejection over the cap, proxy training, reward).

It knows nothing of databases or strategies; the search stores what it returns.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from effnas.records import TrialStatus
from nas.evaluation.config import RewardConfig
from nas.evaluation.latency_table import LatencyTable
from nas.evaluation.proxy import ProxyResult, train_and_evaluate
from nas.evaluation.reward import reward
from nas.space.flops import count_flops, count_params
from nas.space.layout import network_layout
from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig
from nas.training.data import TaskData


@dataclass(frozen=True)
class Outcome:
    """What an evaluation gave: complete (accuracy and reward), rejected (over the FLOPs cap, never trained) or
    failed (with the error). A complete outcome stopped by successive halving is `partial`: its accuracy and
    reward are those after `epochs` epochs, fewer than the proxy's."""

    status: TrialStatus
    flops: int
    params: int
    accuracy: float | None = None
    reward: float | None = None
    error: str | None = None
    build_seconds: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    epochs: int | None = None
    partial: bool = False
    first_rung_reward: float | None = None
    supernet_accuracy: float | None = None
    supernet_reward: float | None = None
    latency_ms: float | None = None

    @property
    def strategy_value(self) -> float:
        """What the strategy maximises: the reward, or 0 for a network that gave none."""
        return self.reward if self.status is TrialStatus.COMPLETE else 0.0

    def results(self) -> dict[str, float | str | None]:
        """The stored results of a trial, keyed by column; a supernet's scores only where it gave them, so that
        proxy training a supernet-scored trial keeps them."""
        supernet = {"supernet_accuracy": self.supernet_accuracy, "supernet_reward": self.supernet_reward}
        return {**{key: value for key, value in supernet.items() if value is not None},
            "accuracy": self.accuracy, "reward": self.reward, "error": self.error,
            "build_seconds": self.build_seconds, "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds, "epochs": self.epochs, "partial": self.partial,
            "first_rung_reward": self.first_rung_reward, "latency_ms": self.latency_ms,
        }


def error_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class Evaluator:
    """Scores specs on one task: the reward's FLOPs at `reward.resolution` (or, for a latency target, the latency
    `latency_table` predicts), the proxy training on `data`."""

    def __init__(self, reward_config: RewardConfig, proxy: ProxyConfig, data: TaskData,
                 latency_table: LatencyTable | None = None) -> None:
        if reward_config.objective == "latency" and latency_table is None:
            raise ValueError("a latency target needs a latency table")
        self.reward_config = reward_config
        self.proxy = proxy
        self.data = data
        self.latency_table = latency_table

    def cost(self, spec: ArchSpec) -> tuple[int, int]:
        """FLOPs (multiply-accumulates at the reward's resolution) and parameters."""
        return count_flops(spec, self.reward_config.resolution), count_params(spec)

    def predicted_latency(self, spec: ArchSpec) -> float | None:
        """The latency table's prediction (ms) at the reward's resolution, for a latency target; else None."""
        if self.reward_config.objective != "latency":
            return None
        return self.latency_table.predict(network_layout(spec, self.reward_config.resolution))

    def reward_cost(self, spec: ArchSpec, flops: int) -> float:
        """What the reward weighs accuracy against: FLOPs, or the predicted latency."""
        latency = self.predicted_latency(spec)
        return flops if latency is None else latency

    def over_cap(self, cost: float) -> bool:
        return cost > self.reward_config.cost_limit

    def train(self, spec: ArchSpec, on_epoch: Callable[[int, int], None] | None = None,
              promote: Callable[[float], bool] | None = None) -> ProxyResult:
        """The proxy's validation accuracy of `spec`, by training it (a surrogate evaluator predicts it instead);
        `promote(accuracy)` decides after the first rung whether training goes on (successive halving)."""
        return train_and_evaluate(spec, self.data, self.proxy, on_epoch=on_epoch, promote=promote)

    def evaluate(self, spec: ArchSpec, *, capped: bool = True,
                 on_epoch: Callable[[int, int], None] | None = None,
                 promote: Callable[[float], bool] | None = None) -> Outcome:
        """Train `spec` on the proxy and score it; with `capped`, a spec over the FLOPs cap is rejected without
        training. With `promote` (successive halving), `promote(reward)` is asked after the first rung whether
        to train on to the full proxy. A failure of training is an outcome, not an exception; Ctrl-C is not
        caught."""
        config = self.reward_config
        flops, params = self.cost(spec)
        latency = self.predicted_latency(spec)
        cost = flops if latency is None else latency
        if capped and self.over_cap(cost):
            return Outcome(TrialStatus.REJECTED, flops, params, error=self._over_cap_error(cost), latency_ms=latency)
        start = time.perf_counter()

        def score(accuracy: float) -> float:
            return reward(accuracy, cost, config.target, config.constraint, config.w)

        rung = None if promote is None else (lambda accuracy: promote(score(accuracy)))
        try:
            result = self.train(spec, on_epoch, rung)
        except Exception as exc:  # any failure of one candidate is recorded and the search goes on
            return Outcome(TrialStatus.FAILED, flops, params, error=error_line(exc),
                           train_seconds=time.perf_counter() - start, latency_ms=latency)
        first_rung = None if result.first_rung_accuracy is None else score(result.first_rung_accuracy)
        return Outcome(
            TrialStatus.COMPLETE, flops, params, accuracy=result.accuracy, reward=score(result.accuracy),
            build_seconds=result.build_seconds, train_seconds=result.train_seconds, eval_seconds=result.eval_seconds,
            epochs=result.epochs, partial=result.epochs < self.proxy.epochs, first_rung_reward=first_rung,
            latency_ms=latency,
        )

    def _over_cap_error(self, cost: float) -> str:
        config = self.reward_config
        if config.objective == "latency":
            return (f"predicted {cost:.3g} ms exceeds {config.max_flops_ratio:g}x the target "
                    f"({config.cost_limit:.3g} ms)")
        return f"{cost:,} FLOPs exceed {config.max_flops_ratio:g}x the target ({config.cost_limit:,.0f})"
