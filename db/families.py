"""Families grown by compound scaling: their members and grid points.

Guarantees: a family is stored whole (family, members, grid points) in one transaction or not at all, and is
never changed afterwards; members read back in phi order, grid points in the order they were searched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from db.models import FamilyMemberRecord, FamilyRecord, GridPointRecord, TrialRecord
from db.session import Database
from db.states import PointStatus


@dataclass(frozen=True)
class FamilyMember:
    """One member of a family: how it is scaled from the baseline (multipliers, resolution, dropout), the network
    that gives (`arch`, effnas's spec as JSON, and its block strings), what it costs (FLOPs at its resolution,
    params, FLOPs over B0's) and, where it was measured, its proxy accuracy."""

    name: str
    phi: int
    width: float
    depth: float
    resolution_mult: float
    resolution: int
    dropout: float
    params: int
    flops: int
    flops_ratio: float
    arch: dict[str, Any]
    block_strings: str
    accuracy: float | None = None
    train_seconds: float | None = None

    @property
    def ideal_ratio(self) -> float:
        """What the scaling rule promises: 2^phi times B0's FLOPs."""
        return 2.0**self.phi


@dataclass(frozen=True)
class GridPoint:
    """One (alpha, beta, gamma) of the compound-scaling grid search, applied at phi = 1, and its proxy result."""

    alpha: float
    beta: float
    gamma: float
    flops_factor: float
    status: PointStatus
    flops: int | None
    params: int | None
    resolution: int | None
    arch: dict[str, Any] | None
    accuracy: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Family:
    """A baseline grown into members B0..B{phi_max} by a scaling rule, with the coefficients and grid search that
    made them."""

    name: str
    baseline_kind: str
    baseline_ref: str
    baseline_trial_id: int | None
    baseline_arch: dict[str, Any]
    coefficient_source: str
    alpha: float | None
    beta: float | None
    gamma: float | None
    base_resolution: int
    config: dict[str, Any]
    members: list[FamilyMember]
    grid_points: list[GridPoint] = field(default_factory=list)
    # compound, or the one dimension (width, depth, resolution) that alpha, beta, gamma scale.
    rule: str = "compound"
    id: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class FamilyRow:
    """A family as the dashboard lists it."""

    id: int
    name: str
    rule: str
    source: str
    baseline_ref: str | None
    baseline_trial_id: int | None
    search_id: int | None
    members: int
    created_at: datetime | None


_MEMBER_FIELDS = tuple(FamilyMember.__dataclass_fields__)
_POINT_FIELDS = tuple(GridPoint.__dataclass_fields__)


def store_family(db: Database, family: Family) -> int:
    """Write the family, its members and its grid points in one transaction; its id."""
    with db.writing() as session:
        record = FamilyRecord(
            name=family.name, baseline_kind=family.baseline_kind, baseline_trial_id=family.baseline_trial_id,
            baseline_ref=family.baseline_ref, baseline_arch=family.baseline_arch,
            rule=family.rule, coefficient_source=family.coefficient_source, alpha=family.alpha, beta=family.beta, gamma=family.gamma,
            phi_max=len(family.members) - 1, base_resolution=family.base_resolution, config=family.config,
        )
        for member in family.members:
            record.members.append(FamilyMemberRecord(**{name: getattr(member, name) for name in _MEMBER_FIELDS}))
        for point in family.grid_points:
            values = {name: getattr(point, name) for name in _POINT_FIELDS}
            values["status"] = point.status.value
            record.grid_points.append(GridPointRecord(**values))
        session.add(record)
        session.flush()
        return record.id


def get_family(db: Database, family_id: int) -> Family | None:
    with db.reading() as session:
        record = session.get(FamilyRecord, family_id)
        if record is None:
            return None
        return Family(
            id=record.id, name=record.name, baseline_kind=record.baseline_kind, baseline_ref=record.baseline_ref,
            baseline_trial_id=record.baseline_trial_id, baseline_arch=record.baseline_arch,
            rule=record.rule, coefficient_source=record.coefficient_source, alpha=record.alpha, beta=record.beta, gamma=record.gamma,
            base_resolution=record.base_resolution, config=dict(record.config), created_at=record.created_at,
            members=[FamilyMember(**{name: getattr(m, name) for name in _MEMBER_FIELDS}) for m in record.members],
            grid_points=[
                GridPoint(**{**{name: getattr(p, name) for name in _POINT_FIELDS},
                                 "status": PointStatus(p.status)})
                for p in record.grid_points
            ],
        )


def list_families(db: Database) -> list[FamilyRow]:
    """Every family, newest first, with the search its baseline trial came from."""
    counts = (
        select(FamilyMemberRecord.family_id, func.count().label("members"))
        .group_by(FamilyMemberRecord.family_id)
        .subquery()
    )
    with db.reading() as session:
        rows = session.execute(
            select(
                FamilyRecord.id, FamilyRecord.name, FamilyRecord.rule, FamilyRecord.coefficient_source, FamilyRecord.baseline_ref,
                FamilyRecord.baseline_trial_id, TrialRecord.search_id, func.coalesce(counts.c.members, 0),
                FamilyRecord.created_at,
            )
            .outerjoin(counts, counts.c.family_id == FamilyRecord.id)
            .outerjoin(TrialRecord, TrialRecord.id == FamilyRecord.baseline_trial_id)
            .order_by(FamilyRecord.id.desc())
        ).all()
    return [FamilyRow(*row) for row in rows]
