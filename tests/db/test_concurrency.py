
"""Two searches writing to one database at once, and the dashboard reading it meanwhile (SQLite WAL and, with
$EFFNAS_TEST_PG, PostgreSQL)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import open_database
from db.models import SearchRecord, TrialRecord

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.mark.slow
def test_two_searches_write_at_once_while_the_dashboard_reads(db_url, tmp_path, monkeypatch):
    common = ["--db", db_url, "--target-flops", "400M", "--trials", "3", "--epochs", "1", "--subset", "300",
              "--threads", "1", "--strategy", "random"]
    env = {**os.environ, "EFFNAS_DB": ""}
    searches = [
        subprocess.Popen([sys.executable, "-m", "nas.search", *common, "--seed", str(seed), "--name", f"s{seed}"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for seed in (1, 2)
    ]
    monkeypatch.setenv("EFFNAS_DB", db_url)
    pages_seen = 0
    while any(p.poll() is None for p in searches):
        try:
            open_database(db_url, create=False)
        except Exception:
            time.sleep(0.3)
            continue
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params["page"] = "progress"
        at.run()
        assert not at.exception and not at.error
        pages_seen += 1
        time.sleep(0.5)
    for process in searches:
        assert process.wait() == 0, process.stderr.read()
    assert pages_seen >= 1
    with open_database(db_url, create=False).reading() as session:
        by_name = {s.name: s for s in session.scalars(select(SearchRecord))}
        assert set(by_name) == {"s1", "s2"}
        for search in by_name.values():
            rows = session.scalars(select(TrialRecord).where(TrialRecord.search_id == search.id)).all()
            assert search.status == "finished"
            assert sorted(r.number for r in rows) == list(range(4))  # B0 reference + 3 candidates, no gaps
            assert len({(r.role, r.arch_key) for r in rows}) == 4
            assert all(r.status in ("complete", "rejected") for r in rows)
