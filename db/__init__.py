"""Storage: every SQL statement of effnas lives in this package, which imports nothing else of effnas.

`open_database` gives a `Database`; `db.searches`, `db.trials`, `db.families` and `db.training` read and write it through
plain functions that take and return plain dataclasses. States and roles are the enums of `db.states`.
"""

from db.session import (
    DB_HELP,
    DEFAULT_DB_URL,
    Database,
    DatabaseError,
    absolute_url,
    db_argument,
    describe_url,
    open_database,
    resolve_url,
    sqlite_path,
)
from db.states import FINISHED, IN_FLIGHT, PointStatus, SearchStatus, TrainingStatus, TrialRole, TrialStatus

__all__ = [
    "DB_HELP",
    "DEFAULT_DB_URL",
    "FINISHED",
    "IN_FLIGHT",
    "Database",
    "DatabaseError",
    "PointStatus",
    "SearchStatus",
    "TrainingStatus",
    "TrialRole",
    "TrialStatus",
    "absolute_url",
    "db_argument",
    "describe_url",
    "open_database",
    "resolve_url",
    "sqlite_path",
]
