"""Searches: create one, read its stored configuration, follow its status, list them all.

Guarantees: every function is one transaction; a search's `config` is stored as given and read back unchanged,
so `--resume` needs nothing else; a status change stamps `started_at`/`finished_at` in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from db.models import FamilyRecord, SearchRecord, TrainingRunRecord, TrialRecord, utcnow
from db.session import Database
from effnas.records import SearchInfo, SearchRow, SearchStatus, TrialRole


def _info(record: SearchRecord) -> SearchInfo:
    return SearchInfo(
        id=record.id, name=record.name, status=SearchStatus(record.status), strategy=record.strategy,
        dataset=record.dataset, target_flops=record.target_flops or None, resolution=record.resolution, seed=record.seed,
        max_trials=record.max_trials, config=dict(record.config), created_at=record.created_at,
        started_at=record.started_at, finished_at=record.finished_at, worker=record.worker, error=record.error,
        target_latency_ms=record.target_latency_ms,
    )


def create_search(
    db: Database, *, name: str, strategy: str, dataset: str, target_flops: int | None, resolution: int, seed: int,
    max_trials: int, config: dict[str, Any], target_latency_ms: float | None = None,
) -> int:
    """A new search in status running; its id."""
    with db.writing() as session:
        record = SearchRecord(
            name=name, status=SearchStatus.RUNNING.value, strategy=strategy, dataset=dataset,
            target_flops=target_flops or 0, resolution=resolution, seed=seed, max_trials=max_trials, config=config,
            target_latency_ms=target_latency_ms,
        )
        session.add(record)
        session.flush()
        return record.id


def get_search(db: Database, search_id: int) -> SearchInfo | None:
    with db.reading() as session:
        record = session.get(SearchRecord, search_id)
        return None if record is None else _info(record)


def update_search_config(db: Database, search_id: int, config: dict[str, Any], max_trials: int) -> None:
    """Replace the stored configuration (a resume that extends the trial or time budget)."""
    with db.writing() as session:
        session.execute(
            update(SearchRecord).where(SearchRecord.id == search_id).values(config=config, max_trials=max_trials)
        )


def set_search_status(db: Database, search_id: int, status: SearchStatus, *, worker: str | None = None,
                      error: str | None = None) -> None:
    """Running (by `worker`, which the dashboard uses to spot a killed process) or ended."""
    values: dict[str, Any] = {"status": status.value, "error": error}
    if status is SearchStatus.RUNNING:
        values.update(started_at=utcnow(), finished_at=None, worker=worker)
    else:
        values["finished_at"] = utcnow()
    with db.writing() as session:
        session.execute(update(SearchRecord).where(SearchRecord.id == search_id).values(**values))


def list_searches(db: Database) -> list[SearchRow]:
    """Every search, newest first."""
    candidates = (
        select(TrialRecord.search_id, func.count().label("trials"), func.max(TrialRecord.reward).label("best"))
        .where(TrialRecord.role == TrialRole.CANDIDATE.value)
        .group_by(TrialRecord.search_id)
        .subquery()
    )
    with db.reading() as session:
        rows = session.execute(
            select(
                SearchRecord.id, SearchRecord.name, SearchRecord.target_flops, SearchRecord.strategy,
                SearchRecord.dataset, SearchRecord.status, func.coalesce(candidates.c.trials, 0),
                SearchRecord.max_trials, candidates.c.best, SearchRecord.created_at, SearchRecord.started_at,
                SearchRecord.finished_at, SearchRecord.worker, SearchRecord.target_latency_ms,
            )
            .outerjoin(candidates, candidates.c.search_id == SearchRecord.id)
            .order_by(SearchRecord.id.desc())
        ).all()
    return [SearchRow(*row[:2], row[2] or None, *row[3:5], SearchStatus(row[5]), *row[6:]) for row in rows]


def change_signature(db: Database) -> tuple[Any, ...]:
    """A cheap fingerprint of everything stored: it moves whenever a trial, search, family or training epoch is
    written."""
    with db.reading() as session:
        searches = session.execute(select(func.count(), func.max(SearchRecord.updated_at))).one()
        trials = session.execute(
            select(func.count(), func.max(TrialRecord.started_at), func.max(TrialRecord.finished_at))
        ).one()
        families = session.scalar(select(func.count()).select_from(FamilyRecord))
        runs = session.execute(select(func.count(), func.max(TrainingRunRecord.updated_at))).one()
    return (*searches, *trials, families, *runs)
