"""Persistence: SQLAlchemy models and session factory. This package only stores; it imports nothing of effnas."""

from db.models import (
    FINISHED_STATUSES,
    IN_FLIGHT_STATUSES,
    Base,
    FamilyMemberRecord,
    FamilyRecord,
    GridPointRecord,
    SearchRecord,
    TrialRecord,
    utcnow,
)
from db.session import DatabaseError, describe_url, open_database, resolve_url, sqlite_path

__all__ = [
    "FINISHED_STATUSES",
    "IN_FLIGHT_STATUSES",
    "Base",
    "DatabaseError",
    "FamilyMemberRecord",
    "FamilyRecord",
    "GridPointRecord",
    "SearchRecord",
    "TrialRecord",
    "describe_url",
    "open_database",
    "resolve_url",
    "sqlite_path",
    "utcnow",
]
