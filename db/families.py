"""Families grown by compound scaling: their members and grid points.

Guarantees: a family is stored whole (family, members, grid points) in one transaction or not at all, and is
never changed afterwards; members read back in phi order, grid points in the order they were searched.
"""

from __future__ import annotations

from sqlalchemy import func, select

from db.models import FamilyMemberRecord, FamilyRecord, GridPointRecord, TrialRecord
from db.session import Database
from effnas.records import Family, FamilyMember, FamilyRow, GridPoint, PointStatus

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
