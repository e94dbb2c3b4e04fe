"""Short read-only queries for the dashboard; each loads only the columns its page shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import FamilyMemberRecord, FamilyRecord, SearchRecord, TrialRecord


@dataclass(frozen=True)
class SearchRow:
    id: int
    name: str
    target_flops: int
    strategy: str
    dataset: str
    status: str
    trials: int
    max_trials: int | None
    best_reward: float | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None


@dataclass(frozen=True)
class TrialPoint:
    id: int
    search_id: int
    number: int
    role: str
    status: str
    flops: int | None
    params: int | None
    accuracy: float | None
    reward: float | None
    block_strings: str


def list_searches(session: Session) -> list[SearchRow]:
    candidates = (
        select(
            TrialRecord.search_id,
            func.count().label("trials"),
            func.max(TrialRecord.reward).label("best_reward"),
        )
        .where(TrialRecord.role == "candidate")
        .group_by(TrialRecord.search_id)
        .subquery()
    )
    rows = session.execute(
        select(
            SearchRecord.id, SearchRecord.name, SearchRecord.target_flops, SearchRecord.strategy,
            SearchRecord.dataset, SearchRecord.status, func.coalesce(candidates.c.trials, 0),
            SearchRecord.max_trials, candidates.c.best_reward, SearchRecord.created_at, SearchRecord.started_at,
            SearchRecord.finished_at, SearchRecord.worker,
        )
        .outerjoin(candidates, candidates.c.search_id == SearchRecord.id)
        .order_by(SearchRecord.id.desc())
    ).all()
    return [SearchRow(*row) for row in rows]


def trial_points(session: Session, search_ids: list[int]) -> list[TrialPoint]:
    """Every trial of the given searches (candidates and the reference), in trial order."""
    rows = session.execute(
        select(
            TrialRecord.id, TrialRecord.search_id, TrialRecord.number, TrialRecord.role, TrialRecord.status,
            TrialRecord.flops, TrialRecord.params, TrialRecord.accuracy, TrialRecord.reward,
            TrialRecord.block_strings,
        )
        .where(TrialRecord.search_id.in_(search_ids))
        .order_by(TrialRecord.search_id, TrialRecord.number)
    ).all()
    return [TrialPoint(*row) for row in rows]


TABLE_COLUMNS = (
    "id", "number", "role", "status", "accuracy", "reward", "flops", "params", "train_seconds", "eval_seconds",
    "attempts", "started_at", "finished_at", "block_strings", "error",
)


def trial_table(session: Session, search_id: int) -> list[dict[str, Any]]:
    columns = [getattr(TrialRecord, name) for name in TABLE_COLUMNS]
    rows = session.execute(
        select(*columns).where(TrialRecord.search_id == search_id).order_by(TrialRecord.number)
    ).all()
    return [dict(zip(TABLE_COLUMNS, row)) for row in rows]


def trial_arch(session: Session, trial_id: int) -> dict[str, Any] | None:
    return session.scalar(select(TrialRecord.arch).where(TrialRecord.id == trial_id))


@dataclass(frozen=True)
class FamilyRow:
    id: int
    name: str
    source: str
    baseline_ref: str | None
    baseline_trial_id: int | None
    search_id: int | None
    members: int
    created_at: datetime | None


def list_families(session: Session) -> list[FamilyRow]:
    counts = (
        select(FamilyMemberRecord.family_id, func.count().label("members"))
        .group_by(FamilyMemberRecord.family_id)
        .subquery()
    )
    rows = session.execute(
        select(
            FamilyRecord.id, FamilyRecord.name, FamilyRecord.coefficient_source, FamilyRecord.baseline_ref,
            FamilyRecord.baseline_trial_id, TrialRecord.search_id, func.coalesce(counts.c.members, 0),
            FamilyRecord.created_at,
        )
        .outerjoin(counts, counts.c.family_id == FamilyRecord.id)
        .outerjoin(TrialRecord, TrialRecord.id == FamilyRecord.baseline_trial_id)
        .order_by(FamilyRecord.id.desc())
    ).all()
    return [FamilyRow(*row) for row in rows]


MEMBER_COLUMNS = ("name", "phi", "width", "depth", "resolution", "dropout", "params", "flops", "flops_ratio",
                  "accuracy", "block_strings")


def family_members(session: Session, family_id: int) -> list[dict[str, Any]]:
    columns = [getattr(FamilyMemberRecord, name) for name in MEMBER_COLUMNS]
    rows = session.execute(
        select(*columns).where(FamilyMemberRecord.family_id == family_id).order_by(FamilyMemberRecord.phi)
    ).all()
    return [dict(zip(MEMBER_COLUMNS, row)) for row in rows]


def change_signature(session: Session) -> tuple[Any, ...]:
    """A cheap fingerprint of everything the pages show: it moves whenever a trial, search or family is written."""
    searches = session.execute(select(func.count(), func.max(SearchRecord.updated_at))).one()
    trials = session.execute(
        select(func.count(), func.max(TrialRecord.started_at), func.max(TrialRecord.finished_at))
    ).one()
    families = session.scalar(select(func.count()).select_from(FamilyRecord))
    return (*searches, *trials, families)
