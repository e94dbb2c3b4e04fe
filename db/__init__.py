"""Storage: every SQL statement of effnas lives in this package, which imports nothing of effnas but its records.

`open_database` gives a `Database`; `db.searches`, `db.trials`, `db.families` and `db.training` read and write it
through plain functions that take and return the records of `effnas.records` (dataclasses, and enums for states
and roles), as Optuna's storages take and return `FrozenTrial`.
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

__all__ = [
    "DB_HELP",
    "DEFAULT_DB_URL",
    "Database",
    "DatabaseError",
    "absolute_url",
    "db_argument",
    "describe_url",
    "open_database",
    "resolve_url",
    "sqlite_path",
]
