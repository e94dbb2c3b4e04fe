import pytest
from sqlalchemy import select

from db import DatabaseError, open_database, resolve_url
from db.models import FamilyMemberRecord, FamilyRecord, SearchRecord, TrialRecord
from nas.space.spec import efficientnet_b0, spec_to_dict


def make_search(session, **overrides) -> SearchRecord:
    values = dict(name="s", strategy="evolution", dataset="mnist", target_flops=400_000_000, resolution=224, seed=0,
                  config={"epochs": 1})
    values.update(overrides)
    search = SearchRecord(**values)
    session.add(search)
    session.flush()
    return search


def test_create_insert_query(db_url):
    url = db_url
    db = open_database(url)
    spec = efficientnet_b0()
    with db.writing() as session:
        search = make_search(session)
        for number, acc in enumerate([0.5, 0.7]):
            session.add(TrialRecord(search_id=search.id, number=number, status="complete", arch=spec_to_dict(spec),
                                    block_strings=" ".join(spec.block_strings()), arch_key=f"k{number}",
                                    accuracy=acc, flops=385_814_752, params=5_288_548, reward=acc))
        family = FamilyRecord(name="f", baseline_kind="name", baseline_ref="efficientnet-b0",
                              baseline_arch=spec_to_dict(spec), coefficient_source="paper", phi_max=7,
                              base_resolution=224, config={})
        family.members.append(FamilyMemberRecord(name="B0", phi=0, width=1, depth=1, resolution_mult=1, resolution=224,
                                                 dropout=0.2, params=1, flops=2, flops_ratio=1.0,
                                                 arch=spec_to_dict(spec), block_strings=""))
        session.add(family)
    # a second open is idempotent and sees the data
    db = open_database(url)
    with db.reading() as session:
        trials = session.scalars(select(TrialRecord).order_by(TrialRecord.accuracy.desc())).all()
        assert [t.accuracy for t in trials] == [0.7, 0.5]
        assert trials[0].arch["blocks"] == spec.block_strings()
        assert trials[0].search.name == "s"
        assert session.scalars(select(FamilyRecord)).one().members[0].name == "B0"
        assert session.execute(select(SearchRecord.status)).scalar() == "running"


def test_sqlite_runs_in_wal_mode(tmp_path):
    db = open_database(str(tmp_path / "w.db"))
    with db.reading() as session:
        assert session.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_same_architecture_cannot_be_stored_twice_in_one_search(db_url):
    db = open_database(db_url)
    with pytest.raises(Exception):
        with db.writing() as session:
            search = make_search(session)
            for number in range(2):
                session.add(TrialRecord(search_id=search.id, number=number, arch={}, block_strings="", arch_key="same"))


def test_a_file_that_is_not_a_database_gives_one_clear_error_and_is_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="not a database"):
        open_database(str(path))
    assert path.read_bytes() == before


def test_unreachable_or_malformed_urls_give_database_error(tmp_path):
    for url in ("postgresql+nosuchdriver://x/y", "://", f"sqlite:///{tmp_path}/missing/dir/x.db",
                "notadialect://host/db"):
        with pytest.raises(DatabaseError):
            open_database(url)
    assert list(tmp_path.iterdir()) == []


def test_opening_without_create_refuses_missing_file(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        open_database(str(tmp_path / "nope.db"), create=False)
    assert not (tmp_path / "nope.db").exists()


def test_url_resolution_order(monkeypatch):
    monkeypatch.delenv("EFFNAS_DB", raising=False)
    assert resolve_url(None) == "sqlite:///effnas.db"
    monkeypatch.setenv("EFFNAS_DB", "sqlite:////tmp/env.db")
    assert resolve_url(None) == "sqlite:////tmp/env.db"
    assert resolve_url("other.db") == "sqlite:///other.db"


def test_schema_creation_is_idempotent_and_a_foreign_schema_is_refused(db_url):
    from sqlalchemy import create_engine, text

    open_database(db_url)
    open_database(db_url)
    with open_database(db_url, create=False).reading() as session:
        assert session.scalar(select(SearchRecord).limit(1)) is None
    other = db_url.replace("test.db", "other.db") if db_url.startswith("sqlite") else None
    if other:
        engine = create_engine(other)
        with engine.begin() as connection:
            connection.execute(text("create table users (id integer primary key)"))
        engine.dispose()
        with pytest.raises(DatabaseError, match="not an effnas"):
            open_database(other)


def test_an_unreachable_postgresql_server_gives_database_error():
    with pytest.raises(DatabaseError, match="cannot open database"):
        open_database("postgresql://nobody:secret@127.0.0.1:1/none")


def test_an_older_schema_is_upgraded_by_writers_and_readers_say_what_to_run(db_url):
    from alembic import command
    from sqlalchemy import text

    from db.session import alembic_config, create_db_engine, current_revision, head_revision

    engine = create_db_engine(db_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(text(
            "insert into searches (name, status, strategy, dataset, target_flops, resolution, seed, config, "
            "created_at, updated_at) values ('old', 'finished', 'random', 'mnist', 400000000, 224, 0, '{}', "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    with pytest.raises(DatabaseError, match="python -m db upgrade --db"):
        open_database(db_url, create=False)
    assert current_revision(engine) == "0001"
    db = open_database(db_url)
    assert current_revision(engine) == head_revision() != "0001"
    with db.reading() as session:
        search = session.scalars(select(SearchRecord)).one()
        assert (search.name, search.worker) == ("old", None)


def test_a_database_from_a_newer_effnas_is_refused(db_url):
    from sqlalchemy import text

    from db.session import create_db_engine

    open_database(db_url)
    engine = create_db_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("update alembic_version set version_num = '9999'"))
    for create in (True, False):
        with pytest.raises(DatabaseError, match="newer effnas"):
            open_database(db_url, create=create)


def test_db_upgrade_command(tmp_path):
    import subprocess
    import sys

    from alembic import command

    from db.session import alembic_config, create_db_engine

    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = create_db_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
    result = subprocess.run([sys.executable, "-m", "db", "upgrade", "--db", url], capture_output=True, text=True)
    assert result.returncode == 0 and "(was 0001)" in result.stdout, result.stderr
    missing = subprocess.run([sys.executable, "-m", "db", "upgrade", "--db", str(tmp_path / "none.db")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_processes_creating_one_new_database_at_the_same_moment_all_succeed(db_url):
    import subprocess
    import sys

    from db.session import create_db_engine, schema_state

    code = "import sys; from db import open_database; open_database(sys.argv[1])"
    processes = [subprocess.Popen([sys.executable, "-c", code, db_url], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert all(p.returncode == 0 for p in processes), errors
    assert schema_state(create_db_engine(db_url)) == "current"


def test_printed_hints_never_show_a_password():
    from db import DEFAULT_DB_URL, db_argument

    assert db_argument(DEFAULT_DB_URL) == ""
    hint = db_argument("postgresql://effnas:s3cret@db.example.org/runs")
    assert "s3cret" not in hint and "db.example.org/runs" in hint
