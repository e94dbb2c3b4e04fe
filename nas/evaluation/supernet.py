"""Scoring candidates on a trained supernet instead of training each: its path, BatchNorm statistics re-estimated
on a few hundred training images, accuracy on the validation split. The outcome is stored as a partial trial of
0 epochs with its supernet accuracy and reward, so it can never win a search or sit on its trained front; the
search proxy-trains the best of them (`nas.search.supernet_search`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from effnas.records import TrialStatus
from nas.evaluation.config import RewardConfig
from nas.evaluation.evaluator import Evaluator, Outcome
from nas.evaluation.latency_table import LatencyTable
from nas.evaluation.proxy import ProxyResult
from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig
from nas.training.data import TaskData
from nas.training.supernet import SupernetTrainer


class SupernetEvaluator(Evaluator):
    """The search's evaluator with a supernet path in place of proxy training; FLOPs, params, the cap and the
    reward are the real ones."""

    def __init__(self, reward_config: RewardConfig, proxy: ProxyConfig, data: TaskData,
                 supernet: SupernetTrainer, latency_table: LatencyTable | None = None) -> None:
        super().__init__(reward_config, proxy, data, latency_table)
        self.supernet = supernet

    def train(self, spec: ArchSpec, on_epoch: Callable[[int, int], None] | None = None,
              promote: Callable[[float], bool] | None = None) -> ProxyResult:
        if promote is not None:
            raise ValueError("a supernet scores each path once; it cannot run successive halving")
        start = time.perf_counter()
        accuracy = self.supernet.path_accuracy(spec)
        return ProxyResult(accuracy, 0.0, 0.0, time.perf_counter() - start, 0)

    def evaluate(self, spec: ArchSpec, *, capped: bool = True,
                 on_epoch: Callable[[int, int], None] | None = None,
                 promote: Callable[[float], bool] | None = None) -> Outcome:
        outcome = super().evaluate(spec, capped=capped, on_epoch=on_epoch, promote=promote)
        if outcome.status is not TrialStatus.COMPLETE:
            return outcome
        return Outcome(outcome.status, outcome.flops, outcome.params, accuracy=outcome.accuracy,
                       reward=outcome.reward, eval_seconds=outcome.eval_seconds, epochs=0, partial=True,
                       supernet_accuracy=outcome.accuracy, supernet_reward=outcome.reward,
                       latency_ms=outcome.latency_ms)
