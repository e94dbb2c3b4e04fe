"""Engines and sessions: which database, how to open it, and one clear error when it cannot be opened.

`open_database` returns a `Database`; the storage modules beside this one (`db.searches`, `db.trials`,
`db.families`) are the only code that opens its sessions.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_DB_FILE = "effnas.db"
DEFAULT_DB_URL = f"sqlite:///{DEFAULT_DB_FILE}"
DB_ENV_VAR = "EFFNAS_DB"
DB_HELP = f"database URL or SQLite file (default ${DB_ENV_VAR}, else {DEFAULT_DB_FILE} in this folder)"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SCHEMA_LOCK_KEY = 0x0EFF4A5  # any fixed number: PostgreSQL advisory lock taken while creating or migrating


class DatabaseError(Exception):
    """The database cannot be used; the message is one line meant for the user."""


def resolve_url(value: str | None = None) -> str:
    """The database URL from `--db`, else $EFFNAS_DB, else `effnas.db` here. A plain path means a SQLite file."""
    chosen = value or os.environ.get(DB_ENV_VAR) or DEFAULT_DB_FILE
    if "://" not in chosen:
        return f"sqlite:///{chosen}"
    return chosen


def driver_url(url: str) -> str:
    """`url` with the driver effnas ships named: a bare postgresql:// would ask for psycopg2, not psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# The module of each URL scheme's driver, as SQLAlchemy loads it.
_DRIVER_MODULES = {"postgresql": "psycopg", "mysql": "pymysql"}


def connection_modules(url: str) -> list[str]:
    """What a Python needs to import to open the database at `url`."""
    driver = _DRIVER_MODULES.get(url.split(":", 1)[0].split("+", 1)[0])
    return ["sqlalchemy", *([driver] if driver else [])]


def db_argument(url: str) -> str:
    """The `--db` part of a command line printed as a hint: empty for the default database, password hidden."""
    return "" if url == DEFAULT_DB_URL else f" --db {describe_url(url)}"


def describe_url(url: str) -> str:
    """The URL as it may be shown: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other back ends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def absolute_url(url: str) -> str:
    """`url` with a relative SQLite path made absolute, so that processes started elsewhere open the same file."""
    path = sqlite_path(url)
    return f"sqlite:///{path.resolve()}" if path is not None and not path.is_absolute() else url


def _enable_sqlite_concurrency(engine: Engine) -> None:
    # WAL lets the dashboard read while a search writes; the busy timeout makes a writer wait instead of failing.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _set_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _set_wal(cursor) -> None:
    # Switching a new file to WAL needs it to itself, and SQLite answers "database is locked" at once, without its
    # busy handler, while another process does the same: two searches opening a new file together. WAL is stored
    # in the file, so whoever loses simply finds it set after a short wait.
    import sqlite3

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def create_db_engine(url: str, *, must_exist: bool = False) -> Engine:
    """An engine for `url`, checked by connecting once. `must_exist` refuses to create a new SQLite file."""
    shown = describe_url(url)
    url = driver_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"invalid database URL {shown!r}") from None
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.exists():
            raise DatabaseError(f"database file {str(path)!r} does not exist")
        if path.exists() and path.is_dir():
            raise DatabaseError(f"database path {str(path)!r} is a directory, not a file")
        if not path.parent.exists():
            raise DatabaseError(f"cannot create database {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if parsed.get_backend_name() == "sqlite":
        kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"unsupported database URL {shown!r}: {_first_line(exc)}") from None
    except (ArgumentError, TypeError, ValueError) as exc:
        raise DatabaseError(f"invalid database URL {shown!r}: {_first_line(exc)}") from None
    if parsed.get_backend_name() == "sqlite":
        _enable_sqlite_concurrency(engine)
    try:
        with engine.connect() as connection:
            inspect(connection).get_table_names()
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {shown}: {_first_line(exc)}") from None
    return engine


MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for effnas's migrations, run on `connection`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}


def _state(connection: Connection) -> str:
    tables = set(inspect(connection).get_table_names())
    if not tables:
        return "empty"
    if "alembic_version" not in tables:
        return "foreign"
    from alembic.runtime.migration import MigrationContext

    revision = MigrationContext.configure(connection).get_current_revision()
    if revision == head_revision():
        return "current"
    if revision in _known_revisions():
        return "old"
    return "newer" if revision else "foreign"


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_state(engine: Engine) -> str:
    """'empty' (no tables), 'current', 'old' (an earlier effnas schema), 'newer' (from a later effnas),
    or 'foreign' (tables of some other program)."""
    with engine.connect() as connection:
        return _state(connection)


@contextlib.contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding a lock for the whole schema check and migration, so that two processes opening a
    new database at the same moment do not both create it, nor see it half made."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            # pysqlite commits each CREATE TABLE on its own; one IMMEDIATE transaction makes the migration atomic
            # and makes the other process wait (busy timeout) for it.
            raw = connection.connection.driver_connection
            raw.isolation_level = None
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    connection.exec_driver_sql("ROLLBACK")
                    raise
                connection.exec_driver_sql("COMMIT")
            finally:
                raw.isolation_level = ""
        else:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
                yield connection


def _schema_problem(state: str, url: str) -> str:
    shown = describe_url(url)
    if state == "foreign":
        return f"database {shown} is not an effnas database (it holds other tables); use another --db"
    if state == "newer":
        return f"database {shown} was written by a newer effnas; upgrade effnas to read it"
    if state == "old":
        return (f"database {shown} has an older effnas schema; upgrade it with: "
                f"python -m db upgrade --db {shown}")
    return f"database {shown} is empty"


def init_schema(engine: Engine) -> None:
    """Create or upgrade the schema as needed; safe to call on every start, from several processes at once."""
    from alembic import command

    try:
        with _schema_lock(engine) as connection:
            state = _state(connection)
            if state in ("empty", "old"):
                command.upgrade(alembic_config(connection), "head")
            elif state != "current":
                raise DatabaseError(_schema_problem(state, str(engine.url)))
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot create the schema in {describe_url(str(engine.url))}: {_first_line(exc)}"
        ) from None


class Database:
    """An open effnas database. `reading()` and `writing()` are for the storage modules of this package: every
    `writing()` block is one transaction, committed when it ends and rolled back on an error."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def shown_url(self) -> str:
        return describe_url(self.url)

    def reading(self) -> Session:
        return self._sessions()

    def writing(self) -> contextlib.AbstractContextManager[Session]:
        return self._sessions.begin()

    def close(self) -> None:
        self._sessions.kw["bind"].dispose()


def open_database(url: str | None = None, *, create: bool = True, migrate: bool = False) -> Database:
    """The resolved database; with `create`, the schema is made or upgraded if needed.

    Without `create` the database must already exist. A reader (neither flag) needs the current effnas schema
    and never changes it; `migrate` is for writers that continue stored work (`--resume`): an older schema is
    upgraded, but no new database is made.
    """
    resolved = resolve_url(url)
    engine = create_db_engine(resolved, must_exist=not create)
    if create or migrate:
        init_schema(engine)
    else:
        state = schema_state(engine)
        if state != "current":
            engine.dispose()
            raise DatabaseError(_schema_problem(state, resolved))
    return Database(resolved, engine)
