"""A study: one search's dedup cache, budget, resume replay and progress events around the evaluator.

A trial reads as claim (numbered and stored as running) -> evaluate (no database) -> record (its outcome
committed). Results are keyed by the canonical architecture: a candidate already in the search is never trained
again. That is also how `--resume` works: the strategy is started again with the stored seed and replays its
earlier proposals from the database, at no training cost, until it reaches new ground; the trials it then adds
are the ones an uninterrupted run would have added.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db import Database, searches, trials
from effnas.records import NewTrial, SearchStatus, TrialInfo, TrialRole, TrialStatus
from nas.evaluation.evaluator import Evaluator, Outcome, error_line
from nas.evaluation.latency import LATENCY_ENVIRONMENT
from nas.evaluation.zero_cost import zero_cost_score
from nas.search.config import SearchConfig
from nas.search.predictor import architecture_features
from nas.space.search_space import SearchSpace
from nas.space.spec import ArchSpec, spec_from_dict, spec_to_dict


@dataclass(frozen=True)
class TrialEnd:
    """A finished trial as the user interface shows it."""

    number: int
    role: TrialRole
    status: TrialStatus
    flops: int
    accuracy: float | None = None
    reward: float | None = None
    error: str | None = None
    partial: bool = False
    epochs: int | None = None
    latency_ms: float | None = None  # predicted, for a latency target


class SearchEvents:
    """What a study tells its user interface; the default hears nothing."""

    def search_started(self, done: int) -> None: ...

    def trial_started(self, number: int, role: TrialRole, scoring: bool = False) -> None: ...

    def epoch_done(self, epoch: int, epochs: int) -> None: ...

    def trial_finished(self, trial: TrialEnd, done: int, best: TrialEnd | None) -> None: ...

    def supernet_step(self, epoch: int, epochs: int, step: int, steps: int) -> None: ...

    def supernet_epoch(self, epoch: int, epochs: int, seconds_left: float) -> None: ...

    def note(self, text: str) -> None: ...


def arch_key(spec: ArchSpec) -> str:
    """SHA-256 of the canonical architecture: equal networks, equal keys."""
    return hashlib.sha256(spec.arch_key().encode()).hexdigest()


def new_trial(spec: ArchSpec, role: TrialRole, sample: dict[str, Any] | None, flops: int,
              params: int, zero_cost_score: float | None = None, latency_ms: float | None = None) -> NewTrial:
    return NewTrial(role=role, arch=spec_to_dict(spec), block_strings=" ".join(spec.canonical().block_strings()),
                     arch_key=arch_key(spec), sample=sample, flops=flops, params=params,
                     zero_cost_score=zero_cost_score, latency_ms=latency_ms)


def create_search(db: Database, config: SearchConfig, name: str | None) -> int:
    reward = config.reward
    target = f"{reward.target_flops / 1e6:g}M" if reward.objective == "flops" else f"{reward.target_latency:g}ms"
    # A latency figure is this machine's: the search keeps what it was measured on, for every later reader.
    measured_on = ({} if reward.objective == "flops"
                   else {LATENCY_ENVIRONMENT: reward.latency_protocol.environment()})
    return searches.create_search(
        db, name=name or f"{config.strategy}-{config.task.dataset}-{target}",
        strategy=config.strategy, dataset=config.task.dataset, target_flops=reward.target_flops,
        resolution=reward.resolution, seed=config.seed, max_trials=config.trials,
        config={**config.to_config(), **measured_on}, target_latency_ms=reward.target_latency,
    )


def search_space(config: SearchConfig, num_classes: int, in_channels: int) -> SearchSpace:
    return SearchSpace(num_classes=num_classes, in_channels=in_channels, resolution=config.reward.resolution,
                       fixed=dict(config.fixed), stem_stride=config.stem_stride)


def _trial_end(trial: TrialInfo) -> TrialEnd:
    return TrialEnd(trial.number, trial.role, trial.status, trial.flops or 0, trial.accuracy, trial.reward,
                    trial.error, trial.partial, trial.epochs, trial.latency_ms)


def promoted(reward: float, first_rung_rewards: list[float], eta: int) -> bool:
    """Successive halving's decision: whether a candidate whose first-rung reward is `reward` trains on, that is,
    whether it ranks in the best ceil(n / eta) of the n first-rung rewards so far (its own included). The first
    candidate always does, so a search has a full-proxy result from its first trial."""
    better = sum(other > reward for other in first_rung_rewards)
    return better < math.ceil(len(first_rung_rewards) / eta)


class Study:
    """One search: what it has evaluated, what it may still start, and each trial's row."""

    def __init__(self, db: Database, search_id: int, config: SearchConfig, evaluator: Evaluator,
                 events: SearchEvents | None = None) -> None:
        self.db = db
        self.search_id = search_id
        self.config = config
        # The proxy trains the reference and every trained candidate; `scorer` scores the strategy's candidates
        # (the proxy too, unless a supernet scores them), and `held_back()` seconds of the time budget, asked before
        # each candidate, are kept for what follows the strategy; the first `min_candidates` candidates are
        # evaluated whatever the time budget.
        self.evaluator = evaluator
        self.scorer = evaluator
        self.held_back: Callable[[], float] = lambda: 0.0
        self.min_candidates = 0
        self.events = events or SearchEvents()
        self.space = search_space(config, evaluator.data.num_classes, evaluator.data.in_channels)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._results: dict[tuple[TrialRole, str], float] = {}
        self._screen_scores: dict[str, float] = {}
        self._best: TrialEnd | None = None
        self._done = 0
        self._in_flight = 0
        self._idle_hits = 0
        self._started = time.monotonic()

    # -- state -------------------------------------------------------------------------------------------
    def load_state(self) -> None:
        """What earlier runs of this search finished; trials they left in flight become interrupted."""
        trials.interrupt_in_flight(self.db, self.search_id,
                                   "the process running this trial stopped before it ended", finished=False)
        for trial in trials.finished_trials(self.db, self.search_id):
            self._results[(trial.role, trial.arch_key)] = (
                trial.reward if trial.status is TrialStatus.COMPLETE else 0.0
            )
            self._done += trial.role is TrialRole.CANDIDATE
        best = trials.best_trial(self.db, self.search_id)
        self._best = None if best is None else _trial_end(best)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def budget_available(self) -> bool:
        config = self.config
        if self._done + self._in_flight >= config.trials:
            return False
        if (config.time_budget is not None and self._done >= self.min_candidates
                and self.elapsed() >= config.time_budget - self.held_back()):
            return False
        # A strategy that only proposes architectures already evaluated has run out of new ones.
        return self._idle_hits < 1000 + len(self._results)

    def _known_value(self, spec: ArchSpec) -> float | None:
        known = self._results.get((TrialRole.CANDIDATE, arch_key(spec)))
        self._idle_hits = self._idle_hits + 1 if known is not None else 0
        return known

    def screen_score(self, sample: dict[str, Any]) -> float:
        """The training-free score (`config.prescreen_score`) of a sample's untrained network, kept to be stored
        with its trial. An architecture this search has evaluated already scores what it did (it costs nothing
        to propose again)."""
        spec = self.space.decode(sample)
        key = arch_key(spec)
        if key not in self._screen_scores:
            score = zero_cost_score(self.config.prescreen_score, spec, self.evaluator.data, self.config.seed)
            self._screen_scores[key] = score
        return self._screen_scores[key]

    def predictor_features(self, sample: dict[str, Any]) -> list[float]:
        """What `--strategy predictor` knows of an architecture: its stages, log FLOPs and log params, all
        counted without running the network (bench/surrogate_fit.py: NASWOT added nothing to the held-out tau
        and cost 0.6 s per candidate)."""
        spec = self.space.decode(sample)
        flops, params = self.evaluator.cost(spec)
        return architecture_features(spec, flops, params)

    def _new_trial(self, spec: ArchSpec, role: TrialRole, sample: dict[str, Any] | None) -> NewTrial:
        flops, params = self.evaluator.cost(spec)
        return new_trial(spec, role, sample, flops, params, self._screen_scores.get(arch_key(spec)),
                         self.evaluator.predicted_latency(spec))

    def _count(self, end: TrialEnd) -> None:
        """Counts a finished trial and tells the user."""
        if end.role is TrialRole.CANDIDATE:
            self._done += 1
            if end.status is TrialStatus.COMPLETE and not end.partial and (
                    self._best is None or end.reward > self._best.reward):
                self._best = end
        self.events.trial_finished(end, self._done, self._best)

    # -- trials in this process --------------------------------------------------------------------------
    def evaluate_sample(self, sample: dict[str, Any]) -> float:
        """The value the strategy maximises for a sample, training it only if this search has not evaluated its
        architecture yet."""
        spec = self.space.decode(sample)
        known = self._known_value(spec)
        if known is not None:
            return known
        return self.run_trial(spec, TrialRole.CANDIDATE, sample).strategy_value

    def evaluate_reference(self) -> None:
        """EfficientNet-B0 for this task, through the same evaluator (once per search)."""
        spec = self.space.reference_spec()
        if (TrialRole.REFERENCE, arch_key(spec)) not in self._results:
            self.run_trial(spec, TrialRole.REFERENCE, self.space.b0_sample())

    def run_trial(self, spec: ArchSpec, role: TrialRole, sample: dict[str, Any]) -> Outcome:
        """Claim -> evaluate -> record. Ctrl-C leaves the trial interrupted and goes on up."""
        trial = trials.claim_trial(self.db, self.search_id, self._new_trial(spec, role, sample), TrialStatus.RUNNING,
                                   self.worker)
        flops = trial.flops
        evaluator = self.scorer if role is TrialRole.CANDIDATE else self.evaluator
        self.events.trial_started(trial.number, role, scoring=evaluator is not self.evaluator)
        try:
            outcome = evaluator.evaluate(spec, capped=role is TrialRole.CANDIDATE,
                                         on_epoch=self.events.epoch_done, promote=self._promotion(trial, role))
        except KeyboardInterrupt:
            trials.record_outcome(self.db, trial.id, TrialStatus.INTERRUPTED,
                                  error="interrupted by the user (Ctrl-C)")
            raise
        trials.record_outcome(self.db, trial.id, outcome.status, **outcome.results())
        self._results[(role, trial.arch_key)] = outcome.strategy_value
        self._count(TrialEnd(trial.number, role, outcome.status, flops, outcome.accuracy, outcome.reward,
                             outcome.error, outcome.partial, outcome.epochs, outcome.latency_ms))
        return outcome

    def proxy_train(self, trial: TrialInfo) -> None:
        """Proxy-train a candidate a supernet scored: its row keeps the supernet's accuracy and reward and takes
        the proxy's. Ctrl-C leaves it interrupted (a resumed search scores and trains it again)."""
        trials.start_trial_again(self.db, trial.id, self.worker)
        self.events.trial_started(trial.number, trial.role)
        try:
            outcome = self.evaluator.evaluate(spec_from_dict(trial.arch), capped=False,
                                              on_epoch=self.events.epoch_done)
        except KeyboardInterrupt:
            trials.record_outcome(self.db, trial.id, TrialStatus.INTERRUPTED, error="interrupted by the user (Ctrl-C)")
            raise
        trials.record_outcome(self.db, trial.id, outcome.status, **outcome.results())
        self._done -= 1  # counted when the supernet scored it
        self._count(TrialEnd(trial.number, trial.role, outcome.status, trial.flops or 0, outcome.accuracy,
                             outcome.reward, outcome.error, outcome.partial, outcome.epochs, outcome.latency_ms))

    def _promotion(self, trial: TrialInfo, role: TrialRole) -> Callable[[float], bool] | None:
        """With successive halving, a candidate's decision after the first rung: its first-rung reward is stored
        (other trial processes of the search rank against it), then ranked against the search's completed
        candidates'. The reference always trains the full proxy."""
        if self.config.fidelity != "halving" or role is not TrialRole.CANDIDATE:
            return None

        def promote(reward: float) -> bool:
            trials.set_first_rung_reward(self.db, trial.id, reward)
            return promoted(reward, [*trials.first_rung_rewards(self.db, self.search_id), reward], self.config.eta)

        return promote

    # -- trials in other processes (NNI's training-service engine) -----------------------------------------
    def pending_reference(self) -> dict[str, Any] | None:
        """The sample of EfficientNet-B0 when this search wants it and has not evaluated it yet."""
        spec = self.space.reference_spec()
        if not self.config.reference or (TrialRole.REFERENCE, arch_key(spec)) in self._results:
            return None
        return self.space.b0_sample()

    def trial_spec(self, sample: dict[str, Any], role: TrialRole) -> ArchSpec:
        return self.space.reference_spec() if role is TrialRole.REFERENCE else self.space.decode(sample)

    def screen(self, sample: dict[str, Any]) -> float | None:
        """The value of a candidate that needs no trial process: an architecture this search already has, or one
        over the FLOPs cap (recorded here as rejected). None when it must be trained."""
        spec = self.space.decode(sample)
        known = self._known_value(spec)
        if known is not None:
            return known
        flops, _ = self.evaluator.cost(spec)
        if self.evaluator.over_cap(self.evaluator.reward_cost(spec, flops)):
            return self.run_trial(spec, TrialRole.CANDIDATE, sample).strategy_value
        return None

    def reserve(self, sample: dict[str, Any], role: TrialRole) -> None:
        """Numbers the trial and stores it as queued, before a trial process takes it. Numbers follow the order
        of proposals, and an architecture is never handed out twice."""
        spec = self.trial_spec(sample, role)
        trial = trials.claim_trial(self.db, self.search_id, self._new_trial(spec, role, sample), TrialStatus.QUEUED,
                                   self.worker)
        if role is TrialRole.CANDIDATE:
            self._in_flight += 1
        self.events.trial_started(trial.number, role)

    def collect(self, sample: dict[str, Any], role: TrialRole, log_hint: str = "", lost: bool = False) -> float:
        """After the trial process of `sample` ended: the value of its outcome as stored. A process that ended
        without storing one (killed, out of memory, an import error) leaves its trial failed; one whose remote
        machine was `lost` (connection or machine gone) leaves it interrupted, to be trained again on resume.
        Either way the strategy sees a failure."""
        key = arch_key(self.trial_spec(sample, role))
        hint = f"; {log_hint}" if log_hint else ""
        if lost:
            trial = trials.collect_trial(
                self.db, self.search_id, role, key,
                f"its remote machine was lost (the SSH connection or the machine's NNI trial keeper); --resume "
                f"trains it again{hint}", status=TrialStatus.INTERRUPTED,
            )
        else:
            trial = trials.collect_trial(self.db, self.search_id, role, key,
                                         f"the trial process ended without storing a result{hint}")
        value = trial.reward if trial.status is TrialStatus.COMPLETE else 0.0
        self._results[(role, key)] = value
        if role is TrialRole.CANDIDATE:
            self._in_flight -= 1
        self._count(_trial_end(trial))
        return value

    def abandon_in_flight(self) -> None:
        """Marks this search's queued and running trials interrupted (their processes were stopped)."""
        trials.interrupt_in_flight(self.db, self.search_id, "stopped before it ended", finished=True)
        self._in_flight = 0

    # -- the whole search --------------------------------------------------------------------------------
    def start(self) -> None:
        """Read what earlier runs finished and mark the search running in this process."""
        self.load_state()
        self._started = time.monotonic()
        searches.set_search_status(self.db, self.search_id, SearchStatus.RUNNING, worker=self.worker)
        self.events.search_started(self._done)

    def end(self, exc: BaseException | None) -> None:
        """Mark the search finished, or interrupted (Ctrl-C) or failed with the trials still in flight."""
        if exc is None:
            searches.set_search_status(self.db, self.search_id, SearchStatus.FINISHED)
            return
        self.abandon_in_flight()
        if isinstance(exc, KeyboardInterrupt):
            searches.set_search_status(self.db, self.search_id, SearchStatus.INTERRUPTED)
        else:
            searches.set_search_status(self.db, self.search_id, SearchStatus.FAILED, error=error_line(exc))


def train_queued_trial(db_url: str, search_id: int, sample: dict[str, Any], role: str) -> float:
    """The work of one trial process: train the trial `sample` that the search process queued, store its row,
    and return its value. A failure before training starts (data, device) is stored with the trial, then raised."""
    from db import open_database
    from nas.training.data import load_task_data

    db = open_database(db_url, create=False)
    config = SearchConfig.from_config(searches.get_search(db, search_id).config)
    trial_role = TrialRole(role)
    try:
        data = load_task_data(config.task, config.proxy.resolution)
    except Exception as exc:
        trials.fail_in_flight_sample(db, search_id, trial_role, sample, error_line(exc))
        raise
    study = Study(db, search_id, config, Evaluator(config.reward, config.proxy, data))
    return study.run_trial(study.trial_spec(sample, trial_role), trial_role, sample).strategy_value

