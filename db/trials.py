"""Trials of a search: claim one, record its outcome, read them back.

Guarantees:
- A search holds at most one trial per (role, architecture key): claiming an architecture the search already
  has returns that trial (with its number), so equal networks are never numbered twice.
- Numbers follow the order of claims, from 0, with no gaps, even with several processes claiming at once (the
  unique constraint on (search, number) makes a racing claim fail rather than duplicate).
- Every function is one transaction: a trial's outcome is committed when `record_outcome` returns, so a killed
  process loses no finished trial.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import func, select, update

from db.models import TrialRecord, utcnow
from db.session import Database
from effnas.records import FINISHED, IN_FLIGHT, FinishedTrial, NewTrial, TrialInfo, TrialPoint, TrialRole, TrialStatus

_INFO_FIELDS = tuple(f.name for f in fields(TrialInfo))


def _info(row: TrialRecord) -> TrialInfo:
    values = {name: getattr(row, name) for name in _INFO_FIELDS}
    values.update(role=TrialRole(row.role), status=TrialStatus(row.status))
    return TrialInfo(**values)


def _find(session, search_id: int, role: TrialRole, arch_key: str) -> TrialRecord | None:
    return session.scalars(
        select(TrialRecord).where(
            TrialRecord.search_id == search_id, TrialRecord.role == role.value, TrialRecord.arch_key == arch_key
        )
    ).first()


def claim_trial(db: Database, search_id: int, trial: NewTrial, status: TrialStatus, worker: str) -> TrialInfo:
    """The search's trial of `trial.arch_key` (numbered now if new), set to `status`: queued for a trial process,
    or running here (which counts an attempt and stamps `worker` and `started_at`)."""
    with db.writing() as session:
        row = _find(session, search_id, trial.role, trial.arch_key)
        if row is None:
            number = session.scalar(
                select(func.coalesce(func.max(TrialRecord.number) + 1, 0)).where(TrialRecord.search_id == search_id)
            )
            row = TrialRecord(
                search_id=search_id, number=number, role=trial.role.value, arch=trial.arch,
                block_strings=trial.block_strings, arch_key=trial.arch_key, sample=trial.sample, attempts=0,
            )
            session.add(row)
        row.status = status.value
        row.error = None
        row.finished_at = None
        row.epochs, row.partial, row.first_rung_reward = None, False, None
        row.supernet_accuracy = row.supernet_reward = None
        row.flops, row.params, row.latency_ms = trial.flops, trial.params, trial.latency_ms
        if trial.zero_cost_score is not None:
            row.zero_cost_score = trial.zero_cost_score
        if status is TrialStatus.RUNNING:
            row.attempts += 1
            row.worker = worker
            row.started_at = utcnow()
        session.flush()
        return _info(row)


def record_outcome(db: Database, trial_id: int, status: TrialStatus, **values: Any) -> None:
    """End a trial: its status, its results (accuracy, reward, seconds, error) and `finished_at`."""
    unknown = set(values) - set(_INFO_FIELDS)
    if unknown:
        raise ValueError(f"not a trial column: {', '.join(sorted(unknown))}")
    with db.writing() as session:
        session.execute(
            update(TrialRecord).where(TrialRecord.id == trial_id)
            .values(status=status.value, finished_at=utcnow(), **values)
        )


def record_measured_latency(db: Database, trial_id: int, milliseconds: float) -> None:
    """A finished trial's latency as measured (a latency search measures its winner and front)."""
    with db.writing() as session:
        session.execute(update(TrialRecord).where(TrialRecord.id == trial_id).values(measured_latency_ms=milliseconds))


def interrupt_in_flight(db: Database, search_id: int, error: str, *, finished: bool) -> None:
    """Mark the search's queued and running trials interrupted (their process stopped); `finished` stamps the
    time, which is unknown when the process was killed."""
    values: dict[str, Any] = {"status": TrialStatus.INTERRUPTED.value, "error": error}
    if finished:
        values["finished_at"] = utcnow()
    with db.writing() as session:
        session.execute(
            update(TrialRecord)
            .where(TrialRecord.search_id == search_id, TrialRecord.status.in_([s.value for s in IN_FLIGHT]))
            .values(**values)
        )


def finished_trials(db: Database, search_id: int) -> list[FinishedTrial]:
    with db.reading() as session:
        rows = session.execute(
            select(TrialRecord.role, TrialRecord.arch_key, TrialRecord.status,
                   func.coalesce(TrialRecord.supernet_reward, TrialRecord.reward)).where(
                TrialRecord.search_id == search_id, TrialRecord.status.in_([s.value for s in FINISHED])
            )
        ).all()
    return [FinishedTrial(TrialRole(role), key, TrialStatus(status), value) for role, key, status, value in rows]


def collect_trial(db: Database, search_id: int, role: TrialRole, arch_key: str, error: str,
                  status: TrialStatus = TrialStatus.FAILED) -> TrialInfo:
    """The trial as its process left it; one still queued or running (the process ended without storing a
    result) gets `status` (failed, or interrupted where the process was lost with its machine) and `error`."""
    with db.writing() as session:
        row = _find(session, search_id, role, arch_key)
        if TrialStatus(row.status) in IN_FLIGHT:
            row.status = status.value
            row.error = error
            row.finished_at = utcnow()
        session.flush()
        return _info(row)


def fail_in_flight_sample(db: Database, search_id: int, role: TrialRole, sample: dict[str, Any], error: str) -> None:
    """Fail the in-flight trial of `sample`, for a trial process that cannot even compute its architecture
    key (its data did not load)."""
    with db.writing() as session:
        for row in session.scalars(
            select(TrialRecord).where(
                TrialRecord.search_id == search_id, TrialRecord.role == role.value,
                TrialRecord.status.in_([s.value for s in IN_FLIGHT]),
            )
        ):
            if row.sample == sample:
                row.status, row.error, row.finished_at = TrialStatus.FAILED.value, error, utcnow()


def set_first_rung_reward(db: Database, trial_id: int, reward: float) -> None:
    """Store a running trial's reward after the first rung of successive halving."""
    with db.writing() as session:
        session.execute(update(TrialRecord).where(TrialRecord.id == trial_id).values(first_rung_reward=reward))


def first_rung_rewards(db: Database, search_id: int) -> list[float]:
    """The first-rung rewards of the search's completed candidates (promoted or stopped), in trial order."""
    with db.reading() as session:
        return list(session.scalars(
            select(TrialRecord.first_rung_reward)
            .where(TrialRecord.search_id == search_id, TrialRecord.role == TrialRole.CANDIDATE.value,
                   TrialRecord.status == TrialStatus.COMPLETE.value, TrialRecord.first_rung_reward.is_not(None))
            .order_by(TrialRecord.number)
        ))


def _best_trained(db: Database, search_id: int, order: tuple[Any, ...], *where: Any) -> TrialInfo | None:
    """The first, by `order`, completed candidate trained to the full proxy that also meets `where`."""
    with db.reading() as session:
        row = session.scalars(
            select(TrialRecord)
            .where(TrialRecord.search_id == search_id, TrialRecord.role == TrialRole.CANDIDATE.value,
                   TrialRecord.status == TrialStatus.COMPLETE.value, TrialRecord.partial.is_(False), *where)
            .order_by(*order, TrialRecord.number)
            .limit(1)
        ).first()
        return None if row is None else _info(row)


def best_trial(db: Database, search_id: int) -> TrialInfo | None:
    """The completed candidate trained to the full proxy with the highest reward (earliest on ties): a partial
    trial, stopped by successive halving or only scored on a supernet, never wins."""
    return _best_trained(db, search_id, (TrialRecord.reward.desc(),))


def most_accurate_within(db: Database, search_id: int, limit: float, cost: str = "flops") -> TrialInfo | None:
    """The completed candidate trained to the full proxy with the highest accuracy among those whose cost is at
    most `limit`: FLOPs, or (`cost` latency) the latency measured where it was, else predicted (the higher reward,
    then the earlier, on ties)."""
    column = (TrialRecord.flops if cost == "flops"
              else func.coalesce(TrialRecord.measured_latency_ms, TrialRecord.latency_ms))
    return _best_trained(db, search_id, (TrialRecord.accuracy.desc(), TrialRecord.reward.desc()), column <= limit)


def trained_candidates(db: Database, search_id: int) -> list[TrialInfo]:
    """The completed candidates trained to the full proxy, in trial order."""
    with db.reading() as session:
        rows = session.scalars(
            select(TrialRecord)
            .where(TrialRecord.search_id == search_id, TrialRecord.role == TrialRole.CANDIDATE.value,
                   TrialRecord.status == TrialStatus.COMPLETE.value, TrialRecord.partial.is_(False))
            .order_by(TrialRecord.number)
        ).all()
        return [_info(row) for row in rows]


def best_supernet_scored(db: Database, search_id: int, count: int) -> list[TrialInfo]:
    """The `count` completed candidates a supernet scored highest (earliest on ties), proxy-trained since or not."""
    with db.reading() as session:
        rows = session.scalars(
            select(TrialRecord)
            .where(TrialRecord.search_id == search_id, TrialRecord.role == TrialRole.CANDIDATE.value,
                   TrialRecord.status == TrialStatus.COMPLETE.value, TrialRecord.supernet_reward.is_not(None))
            .order_by(TrialRecord.supernet_reward.desc(), TrialRecord.number)
            .limit(count)
        ).all()
        return [_info(row) for row in rows]


def start_trial_again(db: Database, trial_id: int, worker: str) -> None:
    """Mark a finished trial running again in `worker` (a supernet-scored candidate now proxy-trained), keeping
    what it has stored."""
    with db.writing() as session:
        row = session.get(TrialRecord, trial_id)
        row.status, row.worker, row.started_at, row.finished_at = TrialStatus.RUNNING.value, worker, utcnow(), None
        row.attempts += 1


def reference_trial(db: Database, search_id: int) -> TrialInfo | None:
    with db.reading() as session:
        row = session.scalars(
            select(TrialRecord).where(TrialRecord.search_id == search_id,
                                      TrialRecord.role == TrialRole.REFERENCE.value)
        ).first()
        return None if row is None else _info(row)


def get_trial(db: Database, trial_id: int) -> TrialInfo | None:
    with db.reading() as session:
        row = session.get(TrialRecord, trial_id)
        return None if row is None else _info(row)


def list_trials(db: Database, search_id: int) -> list[TrialInfo]:
    """Every trial of a search, in trial order."""
    with db.reading() as session:
        rows = session.scalars(
            select(TrialRecord).where(TrialRecord.search_id == search_id).order_by(TrialRecord.number)
        ).all()
        return [_info(row) for row in rows]


def candidate_status_counts(db: Database, search_id: int) -> dict[TrialStatus, int]:
    with db.reading() as session:
        rows = session.execute(
            select(TrialRecord.status, func.count())
            .where(TrialRecord.search_id == search_id, TrialRecord.role == TrialRole.CANDIDATE.value)
            .group_by(TrialRecord.status)
        ).all()
    return {TrialStatus(status): count for status, count in rows}


def trial_points(db: Database, search_ids: list[int]) -> list[TrialPoint]:
    """Every trial of the given searches (candidates and the reference), in trial order, without the columns
    that the charts do not draw."""
    with db.reading() as session:
        rows = session.execute(
            select(
                TrialRecord.id, TrialRecord.search_id, TrialRecord.number, TrialRecord.role, TrialRecord.status,
                TrialRecord.flops, TrialRecord.params, TrialRecord.accuracy, TrialRecord.reward,
                TrialRecord.block_strings, TrialRecord.partial, TrialRecord.epochs, TrialRecord.latency_ms,
                TrialRecord.measured_latency_ms,
            )
            .where(TrialRecord.search_id.in_(search_ids))
            .order_by(TrialRecord.search_id, TrialRecord.number)
        ).all()
    return [TrialPoint(*row[:3], TrialRole(row[3]), TrialStatus(row[4]), *row[5:]) for row in rows]


def trial_columns(db: Database, search_id: int, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """The named columns of every trial of a search, in trial order (statuses and roles as plain strings)."""
    unknown = set(columns) - set(_INFO_FIELDS)
    if unknown:
        raise ValueError(f"not a trial column: {', '.join(sorted(unknown))}")
    with db.reading() as session:
        rows = session.execute(
            select(*(getattr(TrialRecord, name) for name in columns))
            .where(TrialRecord.search_id == search_id)
            .order_by(TrialRecord.number)
        ).all()
    return [dict(zip(columns, row)) for row in rows]


def add_completed_trials(db: Database, search_id: int, completed: list[tuple[NewTrial, float, float]]) -> None:
    """Append finished candidates (trial, accuracy, reward), numbered after the search's last trial, in one
    transaction: for importing results measured elsewhere, and for seeding benchmarks."""
    with db.writing() as session:
        first = session.scalar(
            select(func.coalesce(func.max(TrialRecord.number) + 1, 0)).where(TrialRecord.search_id == search_id)
        )
        now = utcnow()
        session.execute(TrialRecord.__table__.insert(), [
            {"search_id": search_id, "number": first + index, "role": trial.role.value,
             "status": TrialStatus.COMPLETE.value, "arch": trial.arch, "block_strings": trial.block_strings,
             "arch_key": trial.arch_key, "sample": trial.sample, "flops": trial.flops, "params": trial.params,
             "accuracy": accuracy, "reward": reward, "attempts": 1, "started_at": now, "finished_at": now}
            for index, (trial, accuracy, reward) in enumerate(completed)
        ])
