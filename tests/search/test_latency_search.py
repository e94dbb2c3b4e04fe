"""`nas.search --target-latency`: candidates are rewarded by the latency the table predicts on this machine, the
winner and the front are measured, the search resumes to the same trials, and bad input stores nothing."""

import shutil
import sqlite3

import pytest

from helpers import run_main
from tests.search.test_search import TINY, run_search, trials

# A few calibration networks keep the test short; the cap is wide since so few leave the fit loose. Pinning the
# block, kernel and SE leaves fewer distinct parts to time: the table is measured part by part, about half a
# second each.
LATENCY = ["--target-latency", "3ms", "--resolution", "32", "--stem-stride", "2", "--time-budget", "none",
           "--latency-calibration", "6", "--max-flops-ratio", "50", "--fix", "block=mbconv_e6", "--fix", "kernel=3",
           "--fix", "se=0.25", *TINY]


def search_row(db, search_id=1):
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return dict(c.execute("select * from searches where id=?", (search_id,)).fetchone())


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A database with one latency search of 4 candidates (its latency table stored beside)."""
    folder = tmp_path_factory.mktemp("latency")
    result = run_search(*LATENCY, "--trials", "4", db=folder / "l.db", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_a_latency_search_stores_predicted_and_measured_latency(searched):
    folder, result = searched
    db = folder / "l.db"
    rows = trials(db)
    assert len(rows) == 4 and all(row["latency_ms"] > 0 for row in rows)
    measured = [row for row in rows if row["measured_latency_ms"] is not None]
    winner = max((row for row in rows if row["status"] == "complete"), key=lambda row: (row["reward"], -row["number"]))
    assert winner in measured and all(row["measured_latency_ms"] > 0 for row in measured)
    [reference] = trials(db, role="reference")
    assert reference["measured_latency_ms"] > 0
    search = search_row(db)
    assert search["target_latency_ms"] == 3.0 and search["target_flops"] == 0  # stored as 0: no FLOPs target
    assert "target 3 ms at 32px, measured on PyTorch eager" in result.stderr.splitlines()[0]
    assert "Latency table: predicted =" in result.stderr and " ms predicted, " in result.stderr  # each trial's line
    assert "ms predicted" in result.stdout and f"winner (trial {winner['number']})" in result.stdout


def test_a_latency_search_resumes_to_the_same_trials_and_reuses_the_table(searched, tmp_path):
    folder, _ = searched
    straight, split = tmp_path / "straight.db", tmp_path / "split.db"
    for db in (straight, split):
        shutil.copy(folder / "l.db", db)
    common = [*LATENCY, "--strategy", "random", "--no-reference"]
    first = run_search(*common, "--trials", "4", db=straight, cwd=tmp_path)
    assert first.returncode == 0 and "(0 measured now)" in first.stderr, first.stderr
    assert run_search(*common, "--trials", "2", db=split, cwd=tmp_path).returncode == 0
    resumed = run_search("--resume", "2", "--trials", "4", db=split, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    keys = [[row["arch_key"] for row in trials(db, search_id=2)] for db in (straight, split)]
    assert len(keys[0]) == 4 and keys[0] == keys[1]
    assert all(row["latency_ms"] > 0 for row in trials(split, search_id=2))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-flops", "8M"], "give one target"),
        (["--target-latency", "0ms"], "latency must be positive"),
        (["--target-latency=-2ms"], "latency must be positive"),
        (["--latency-runtime", "tflite"], "invalid choice: 'tflite'"),
        (["--latency-device", "cuda"], "no CUDA GPU"),
        (["--latency-batch", "0"], "--latency-batch must be at least 1"),
        (["--workers", "2"], "drop --workers"),
    ],
)
def test_bad_latency_options_give_one_line_exit_2_and_no_database(tmp_path, args, message):
    db = tmp_path / "never.db"
    base = list(LATENCY)
    if args[0].startswith("--target-latency"):
        del base[:2]
    result = run_main("nas.search", "--db", str(db), *base, *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not db.exists()


def test_neither_target_gives_one_line_exit_2(tmp_path):
    result = run_main("nas.search", "--db", str(tmp_path / "never.db"), *LATENCY[2:], cwd=tmp_path)
    assert result.returncode == 2 and "give one target" in result.stderr
    assert not (tmp_path / "never.db").exists()


def test_the_dashboard_offers_latency_as_the_pareto_axis_and_says_on_what(searched, monkeypatch):
    import json

    from streamlit.testing.v1 import AppTest

    from tests.dashboard.test_dashboard import APP, go_to

    folder, _ = searched
    monkeypatch.setenv("EFFNAS_DB", f"sqlite:///{folder / 'l.db'}")
    at = go_to(AppTest.from_file(APP, default_timeout=120), "Pareto fronts")
    at.radio(key="pareto-view").set_value("latency_ms")
    at.run()
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("predicted latency (ms")
    assert any(shape.get("x0") == 3.0 for shape in spec["layout"]["shapes"])  # the target line
    assert any("Latency: predicted by the latency table of search 1: PyTorch eager" in caption.value
               for caption in at.caption)
