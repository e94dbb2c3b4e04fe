"""One search: settings, evaluation of candidates, and their rows in the database.

Every trial is committed when it ends (complete, failed with its error, or rejected without training), so a
killed process loses no finished trial. Results are keyed by the canonical architecture: a candidate already in
the search is never trained again. That is also how `--resume` works: the strategy is started again with the
stored seed and replays its earlier proposals from the database, at no training cost, until it reaches new
ground; the trials it then adds are the ones an uninterrupted run would have added.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import FINISHED_STATUSES, IN_FLIGHT_STATUSES, SearchRecord, TrialRecord, utcnow
from nas.data import DataError, ProxyData, load_proxy_data
from nas.flops import count_flops, count_params
from nas.reward import reward
from nas.space import SearchSpace
from nas.spec import ArchSpec, spec_to_dict
from nas.train import ProxyConfig, train_and_evaluate



@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; stored as the search's config so `--resume` needs nothing else."""

    target_flops: int
    strategy: str = "evolution"
    trials: int = 40
    time_budget: float | None = 540.0
    resolution: int = 224
    proxy_resolution: int = 32
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    seed: int = 0
    constraint: str = "soft"
    w: float | None = None
    max_flops_ratio: float = 4.0
    dataset: str = "mnist"
    data_dir: str | None = None
    subset: int | None = None
    val_fraction: float = 0.2
    fixed: dict[str, Any] = field(default_factory=dict)
    reference: bool = True
    # Part of reproducibility: float reductions (data normalisation, training) round differently per thread count.
    threads: int = 1
    # auto: the GPU when the training process sees one (NNI's gpuIndices decide which), else the CPU.
    device: str = "auto"

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SearchSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in config.items() if key in known})

    def proxy_config(self) -> ProxyConfig:
        return ProxyConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """`auto` becomes `cuda` where this process sees a GPU, else `cpu`; DataError when `cuda` is asked for and
    there is none."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for, but this process sees no CUDA GPU")
    return device


def load_task_data(settings: SearchSettings, resolution: int | None = None, device: str | None = None) -> ProxyData:
    """The search's data (at `resolution`, default the proxy's) on `device` (default: the training device), after
    fixing the thread count that its normalisation and training will use."""
    import torch

    torch.set_num_threads(settings.threads)
    data = load_proxy_data(settings.dataset, settings.data_dir, resolution or settings.proxy_resolution,
                           settings.val_fraction, settings.subset)
    return data.to(device or resolve_device(settings.device))


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    role: str
    status: str
    block_strings: list[str]
    flops: int
    params: int
    accuracy: float | None = None
    reward: float | None = None
    error: str | None = None


class SearchEvents:
    """What a runner tells its user interface; the default hears nothing."""

    def search_started(self, done: int) -> None: ...

    def trial_started(self, number: int, role: str, spec: ArchSpec) -> None: ...

    def epoch_done(self, epoch: int, epochs: int) -> None: ...

    def trial_finished(self, outcome: TrialOutcome, done: int, best: TrialOutcome | None) -> None: ...


def arch_key(spec: ArchSpec) -> str:
    """SHA-256 of the canonical architecture: equal networks, equal keys."""
    return hashlib.sha256(spec.arch_key().encode()).hexdigest()


def join_blocks(spec: ArchSpec) -> str:
    return " ".join(spec.canonical().block_strings())


def create_search(factory: sessionmaker[Session], settings: SearchSettings, name: str | None) -> int:
    with factory.begin() as session:
        record = SearchRecord(
            name=name or f"{settings.strategy}-{settings.dataset}-{settings.target_flops / 1e6:g}M",
            status="running",
            strategy=settings.strategy,
            dataset=settings.dataset,
            target_flops=settings.target_flops,
            resolution=settings.resolution,
            seed=settings.seed,
            max_trials=settings.trials,
            config=settings.to_config(),
        )
        session.add(record)
        session.flush()
        return record.id


def best_trial(session: Session, search_id: int) -> TrialRecord | None:
    """The completed candidate with the highest reward (earliest on ties)."""
    return session.scalars(
        select(TrialRecord)
        .where(TrialRecord.search_id == search_id, TrialRecord.role == "candidate", TrialRecord.status == "complete")
        .order_by(TrialRecord.reward.desc(), TrialRecord.number)
        .limit(1)
    ).first()


def reference_trial(session: Session, search_id: int) -> TrialRecord | None:
    return session.scalars(
        select(TrialRecord).where(TrialRecord.search_id == search_id, TrialRecord.role == "reference")
    ).first()


class SearchRunner:
    """Evaluates candidates for one search and writes each one to the database as it ends."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        search_id: int,
        settings: SearchSettings,
        data: ProxyData,
        events: SearchEvents | None = None,
    ) -> None:
        self.factory = factory
        self.search_id = search_id
        self.settings = settings
        self.data = data
        self.events = events or SearchEvents()
        self.space = SearchSpace(
            num_classes=data.num_classes, in_channels=data.in_channels, resolution=settings.resolution,
            fixed=dict(settings.fixed),
        )
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._results: dict[tuple[str, str], float] = {}
        self._best: TrialOutcome | None = None
        self._done = 0
        self._in_flight = 0
        self._idle_hits = 0
        self._started = time.monotonic()

    # -- state -------------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        with self.factory.begin() as session:
            self._interrupt_in_flight(session, error="the process running this trial stopped before it ended")
            rows = session.execute(
                select(TrialRecord.role, TrialRecord.arch_key, TrialRecord.status, TrialRecord.reward).where(
                    TrialRecord.search_id == self.search_id, TrialRecord.status.in_(FINISHED_STATUSES)
                )
            ).all()
            for role, key, status, value in rows:
                self._results[(role, key)] = value if status == "complete" else 0.0
            self._done = sum(1 for role, *_ in rows if role == "candidate")
            best = best_trial(session, self.search_id)
            if best is not None:
                self._best = self._outcome(best)

    @staticmethod
    def _outcome(row: TrialRecord) -> TrialOutcome:
        return TrialOutcome(
            number=row.number, role=row.role, status=row.status, block_strings=row.block_strings.split(),
            flops=row.flops or 0, params=row.params or 0, accuracy=row.accuracy, reward=row.reward, error=row.error,
        )

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def budget_available(self) -> bool:
        settings = self.settings
        if self._done + self._in_flight >= settings.trials:
            return False
        if settings.time_budget is not None and self.elapsed() >= settings.time_budget:
            return False
        # A strategy that only proposes architectures already evaluated has run out of new ones.
        return self._idle_hits < 1000 + len(self._results)

    # -- evaluation --------------------------------------------------------------------------------------
    def _known_reward(self, spec: ArchSpec) -> float | None:
        known = self._results.get(("candidate", arch_key(spec)))
        if known is not None:
            self._idle_hits += 1
        else:
            self._idle_hits = 0
        return known

    def _count(self, outcome: TrialOutcome) -> float:
        """Counts a finished candidate, tells the user, and returns the reward the strategy sees."""
        self._done += 1
        if outcome.status == "complete" and (self._best is None or outcome.reward > self._best.reward):
            self._best = outcome
        self.events.trial_finished(outcome, self._done, self._best)
        return outcome.reward if outcome.status == "complete" else 0.0

    def evaluate_sample(self, sample: dict[str, Any]) -> float:
        """The reward of a sample, training it only if this search has not evaluated its architecture yet."""
        spec = self.space.decode(sample)
        known = self._known_reward(spec)
        if known is not None:
            return known
        return self._count(self.evaluate(spec, "candidate", sample))

    # -- trials run by other processes (NNI's training-service engine) -------------------------------------
    def pending_reference(self) -> dict[str, Any] | None:
        """The sample of EfficientNet-B0 when this search wants it and has not evaluated it yet."""
        if not self.settings.reference or ("reference", arch_key(self.space.reference_spec())) in self._results:
            return None
        return self.space.b0_sample()

    def trial_spec(self, sample: dict[str, Any], role: str) -> ArchSpec:
        return self.space.reference_spec() if role == "reference" else self.space.decode(sample)

    def screen(self, sample: dict[str, Any]) -> float | None:
        """The reward of a candidate that needs no trial process: an architecture this search already has, or one
        over the FLOPs limit (recorded here as rejected). None when it must be trained."""
        spec = self.space.decode(sample)
        known = self._known_reward(spec)
        if known is not None:
            return known
        if count_flops(spec, self.settings.resolution) > self.flops_limit:
            return self._count(self.evaluate(spec, "candidate", sample))
        return None

    def reserve(self, sample: dict[str, Any], role: str = "candidate") -> None:
        """Numbers the trial and stores it as queued, before a trial process takes it. Numbers follow the order
        of proposals, and an architecture is never handed out twice."""
        spec = self.trial_spec(sample, role)
        with self.factory.begin() as session:
            row = self._claim_row(session, spec, role, sample, status="queued")
            row.flops, row.params = count_flops(spec, self.settings.resolution), count_params(spec)
            number = row.number
        if role == "candidate":
            self._in_flight += 1
        self.events.trial_started(number, role, spec)

    def collect(self, sample: dict[str, Any], role: str = "candidate", log_hint: str = "") -> float:
        """After the trial process of `sample` ended: its outcome as stored. A process that ended without
        storing one (killed, out of memory, an import error) leaves its trial marked failed."""
        key = arch_key(self.trial_spec(sample, role))
        with self.factory.begin() as session:
            row = self._find_row(session, role, key)
            if row.status in IN_FLIGHT_STATUSES:
                row.status = "failed"
                row.error = f"the trial process ended without storing a result{'; ' + log_hint if log_hint else ''}"
                row.finished_at = utcnow()
            outcome = self._outcome(row)
        value = outcome.reward if outcome.status == "complete" else 0.0
        self._results[(role, key)] = value
        if role == "candidate":
            self._in_flight -= 1
            return self._count(outcome)
        self.events.trial_finished(outcome, self._done, self._best)
        return value

    def abandon_in_flight(self) -> None:
        """Marks this search's queued and running candidates interrupted (their trial processes were stopped)."""
        with self.factory.begin() as session:
            self._interrupt_in_flight(session, error="stopped before it ended", finished_at=utcnow())
        self._in_flight = 0

    def _interrupt_in_flight(self, session: Session, **values: Any) -> None:
        session.execute(
            update(TrialRecord)
            .where(TrialRecord.search_id == self.search_id, TrialRecord.status.in_(IN_FLIGHT_STATUSES))
            .values(status="interrupted", **values)
        )

    def evaluate_reference(self) -> None:
        """EfficientNet-B0 for this task, through the same evaluator (once per search)."""
        spec = self.space.reference_spec()
        if ("reference", arch_key(spec)) not in self._results:
            outcome = self.evaluate(spec, "reference", self.space.b0_sample())
            self.events.trial_finished(outcome, self._done, self._best)

    def _find_row(self, session: Session, role: str, key: str) -> TrialRecord | None:
        return session.scalars(
            select(TrialRecord).where(
                TrialRecord.search_id == self.search_id, TrialRecord.role == role, TrialRecord.arch_key == key
            )
        ).first()

    def _claim_row(
        self, session: Session, spec: ArchSpec, role: str, sample: dict[str, Any], status: str = "running"
    ) -> TrialRecord:
        key = arch_key(spec)
        row = self._find_row(session, role, key)
        if row is None:
            number = session.scalar(
                select(func.coalesce(func.max(TrialRecord.number) + 1, 0)).where(
                    TrialRecord.search_id == self.search_id
                )
            )
            row = TrialRecord(
                search_id=self.search_id, number=number, role=role, arch=spec_to_dict(spec),
                block_strings=join_blocks(spec), arch_key=key, sample=sample, attempts=0,
            )
            session.add(row)
        row.status = status
        row.error = None
        row.finished_at = None
        if status == "running":
            row.attempts += 1
            row.worker = self.worker
            row.started_at = utcnow()
        session.flush()
        return row

    @property
    def flops_limit(self) -> float:
        return self.settings.max_flops_ratio * self.settings.target_flops

    def evaluate(self, spec: ArchSpec, role: str, sample: dict[str, Any]) -> TrialOutcome:
        settings = self.settings
        flops = count_flops(spec, settings.resolution)
        params = count_params(spec)
        with self.factory.begin() as session:
            row = self._claim_row(session, spec, role, sample)
            row.flops, row.params = flops, params
            if role == "candidate" and flops > self.flops_limit:
                row.status = "rejected"
                row.error = (
                    f"{flops:,} FLOPs exceed {settings.max_flops_ratio:g}x the target ({self.flops_limit:,.0f})"
                )
                row.finished_at = utcnow()
            number, row_id = row.number, row.id
        self.events.trial_started(number, role, spec)
        if row.status == "rejected":
            self._results[(role, row.arch_key)] = 0.0
            return TrialOutcome(number, role, "rejected", spec.block_strings(), flops, params, error=row.error)

        start = time.perf_counter()
        try:
            result = train_and_evaluate(spec, self.data, settings.proxy_config(), on_epoch=self.events.epoch_done)
        except KeyboardInterrupt:
            self._finish(row_id, status="interrupted", error="interrupted by the user (Ctrl-C)")
            raise
        except Exception as exc:  # any failure of one candidate is recorded and the search goes on
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._finish(row_id, status="failed", error=error, train_seconds=time.perf_counter() - start)
            self._results[(role, row.arch_key)] = 0.0
            return TrialOutcome(number, role, "failed", spec.block_strings(), flops, params, error=error)
        value = reward(result.accuracy, flops, settings.target_flops, settings.constraint, settings.w)
        self._finish(
            row_id, status="complete", accuracy=result.accuracy, reward=value, build_seconds=result.build_seconds,
            train_seconds=result.train_seconds, eval_seconds=result.eval_seconds,
        )
        self._results[(role, row.arch_key)] = value
        return TrialOutcome(number, role, "complete", spec.block_strings(), flops, params, result.accuracy, value)

    def _finish(self, row_id: int, **values: Any) -> None:
        with self.factory.begin() as session:
            session.execute(update(TrialRecord).where(TrialRecord.id == row_id).values(finished_at=utcnow(), **values))

    # -- the whole search --------------------------------------------------------------------------------
    def set_status(self, status: str, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "error": error}
        if status == "running":
            values["started_at"] = utcnow()
            values["finished_at"] = None
            values["worker"] = self.worker
        else:
            values["finished_at"] = utcnow()
        with self.factory.begin() as session:
            session.execute(update(SearchRecord).where(SearchRecord.id == self.search_id).values(**values))

    def run(self, explore: Callable[[SearchRunner], None], reference_here: bool = True) -> None:
        """Evaluate the reference (here, unless `explore` hands it to a trial process), then let `explore` (the
        strategy driver) propose candidates."""
        self._load_state()
        self._started = time.monotonic()
        self.set_status("running")
        self.events.search_started(self._done)
        try:
            if self.settings.reference and reference_here:
                self.evaluate_reference()
            explore(self)
        except KeyboardInterrupt:
            self.set_status("interrupted")
            raise
        except BaseException as exc:
            self.set_status("failed", error="".join(traceback.format_exception_only(type(exc), exc)).strip())
            raise
        self.set_status("finished")


def train_queued_trial(db_url: str, search_id: int, sample: dict[str, Any], role: str) -> float:
    """The work of one trial process of NNI's training-service engine: train the trial `sample` that the search
    process queued, store its row, and return its reward. A failure before training starts (data, device) is
    stored with the trial too, then raised."""
    from db import SearchRecord, open_database

    factory = open_database(db_url, create=False)
    with factory() as session:
        settings = SearchSettings.from_config(session.get(SearchRecord, search_id).config)
    try:
        data = load_task_data(settings)
    except Exception as exc:
        _fail_queued(factory, search_id, sample, role, "".join(traceback.format_exception_only(type(exc), exc)))
        raise
    runner = SearchRunner(factory, search_id, settings, data)
    outcome = runner.evaluate(runner.trial_spec(sample, role), role, sample)
    return outcome.reward if outcome.status == "complete" else 0.0


def _fail_queued(factory: sessionmaker[Session], search_id: int, sample: dict[str, Any], role: str, error: str) -> None:
    # Without the data the architecture key cannot be computed; the queued row is found by its sample instead.
    with factory.begin() as session:
        for row in session.scalars(
            select(TrialRecord).where(
                TrialRecord.search_id == search_id, TrialRecord.role == role,
                TrialRecord.status.in_(IN_FLIGHT_STATUSES),
            )
        ):
            if row.sample == sample:
                row.status, row.error, row.finished_at = "failed", error.strip(), utcnow()
