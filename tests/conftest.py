import contextlib
import os
import random
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("NNI_FRAMEWORK", "none")

PG_ENV = "EFFNAS_TEST_PG"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def rng():
    return random.Random(1234)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server named by $EFFNAS_TEST_PG (a server URL such as
    postgresql://effnas:effnas@127.0.0.1/postgres), dropped afterwards; skips the test where it is not set."""
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(f"set {PG_ENV} to run the database tests against PostgreSQL as well")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from db.session import driver_url

    base = make_url(driver_url(server))
    name = f"effnas_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, and a new database on the PostgreSQL server named by
    $EFFNAS_TEST_PG when it is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database (see postgres_database)."""
    with postgres_database() as url:
        yield url
