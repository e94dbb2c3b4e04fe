import contextlib
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import mnist_idx
from nas.evaluation.pareto import hypervolume, pareto_front

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")


def cli(module, *args, cwd):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "EFFNAS_DB": ""})
    assert result.returncode == 0, result.stderr
    return result


# Latency measured for the B0s alone (the search keeps them under 300M): the pages need some, not every member's.
LATENCY_OF_B0 = ("--latency-max-flops", "300M")


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory):
    """A database filled by a real tiny search (with its B0 reference), a family grown from it by compound scaling
    (B0 and B1 trained with two seeds) and one by width alone (its B1 trained with two seeds, the same recipe)."""
    folder = tmp_path_factory.mktemp("dash")
    db = folder / "dash.db"
    cli("nas.search", "--target-flops", "200M", "--trials", "5", "--epochs", "1", "--subset", "300",
        "--max-flops-ratio", "1.5", "--strategy", "random", "--db", str(db), cwd=folder)
    cli("scaling.grow", "--search", "1", "--rule", "compound", "--phi-max", "3", "--evaluate", "--evaluate-max-flops",
        "100G", "--epochs", "1", "--subset", "200", *LATENCY_OF_B0, "--db", str(db), cwd=folder)
    digits = mnist_idx(folder / "digits")
    recipe = ["--resolution", "32", "--dataset", "idx", "--data-dir", str(digits), "--subset", "300", "--val-images",
              "200", "--epochs", "2", "--threads", "1", "--seeds", "0,1", "--db", str(db)]
    cli("scaling.train", "--family", "1", "--members", "B0,B1", *recipe, cwd=folder)
    cli("scaling.grow", "--search", "1", "--rule", "width", "--phi-max", "3", *LATENCY_OF_B0,
        "--db", str(db), cwd=folder)
    cli("scaling.train", "--family", "2", "--members", "B1", *recipe, cwd=folder)
    return db


def app_for(db, monkeypatch) -> AppTest:
    monkeypatch.setenv("EFFNAS_DB", f"sqlite:///{db}")
    return AppTest.from_file(APP, default_timeout=120)


def go_to(at: AppTest, page: str) -> AppTest:
    at.run()
    at.sidebar.radio[0].set_value(page)
    at.run()
    return at


def figure_json(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


@pytest.mark.parametrize("page", ["Searches", "Pareto fronts", "Progress", "Trials", "Architecture", "Families",
                                  "Training"])
def test_every_page_runs_without_exception(filled_db, monkeypatch, page):
    at = go_to(app_for(filled_db, monkeypatch), page)
    assert not at.exception, at.exception
    assert not at.error


def test_pareto_chart_has_axis_titles_every_point_and_the_front(filled_db, monkeypatch):
    at = go_to(app_for(filled_db, monkeypatch), "Pareto fronts")
    with sqlite3.connect(filled_db) as c:
        rows = c.execute("select flops, params, accuracy from trials where role='candidate' and status='complete'"
                         ).fetchall()
        reference = c.execute("select flops, accuracy from trials where role='reference'").fetchone()
    assert len(rows) >= 2
    for cost, column in (("flops", 0), ("params", 1)):
        at.radio(key="pareto-view").set_value(cost)
        at.run()
        spec = figure_json(at)
        layout = spec["layout"]
        assert layout["xaxis"]["title"]["text"].startswith("FLOPs" if cost == "flops" else "parameters")
        assert layout["xaxis"]["type"] == "log"
        assert layout["yaxis"]["title"]["text"] == "proxy validation accuracy"
        traces = {t["name"]: t for t in spec["data"]}
        points = next(t for name, t in traces.items() if name.endswith(": trials"))
        front = next(t for name, t in traces.items() if name.endswith(": Pareto front"))
        assert len(points["x"]) == len(rows)
        expected = pareto_front([r[column] for r in rows], [r[2] for r in rows])
        assert sorted(zip(front["x"], front["y"])) == sorted((rows[i][column], rows[i][2]) for i in expected)
        assert front["line"]["shape"] == "hv"
        star = next(t for name, t in traces.items() if name.endswith("EfficientNet-B0"))
        assert star["y"] == [reference[1]]
    at.radio(key="pareto-view").set_value("flops")
    at.run()
    flops_layout = figure_json(at)["layout"]
    assert any(shape.get("x0") == 200_000_000 for shape in flops_layout["shapes"])  # the target line


def test_hiding_dominated_points_leaves_only_the_front(filled_db, monkeypatch):
    at = go_to(app_for(filled_db, monkeypatch), "Pareto fronts")
    at.toggle(key="show-dominated").set_value(False)
    at.run()
    traces = {t["name"]: t for t in figure_json(at)["data"]}
    points = next(t for name, t in traces.items() if name.endswith(": trials"))
    front = next(t for name, t in traces.items() if name.endswith(": Pareto front"))
    assert sorted(points["x"]) == sorted(front["x"])


def test_progress_shows_rejected_trials_as_such(filled_db, monkeypatch):
    at = go_to(app_for(filled_db, monkeypatch), "Progress")
    with sqlite3.connect(filled_db) as c:
        rejected = c.execute("select count(*) from trials where status='rejected'").fetchone()[0]
    traces = {t["name"]: t for t in figure_json(at)["data"]}
    assert rejected > 0 and len(traces["rejected"]["x"]) == rejected
    assert "best so far" in traces


def test_progress_draws_the_hypervolume_of_the_front_after_every_trial(filled_db, monkeypatch):
    at = go_to(app_for(filled_db, monkeypatch), "Progress")
    with sqlite3.connect(filled_db) as c:
        rows = c.execute("select number, status, flops, accuracy from trials where role='candidate' order by number"
                         ).fetchall()
    [series] = figure_json(at, 1)["data"]
    assert series["x"] == [r[0] for r in rows]
    complete = [(r[2], r[3]) for r in rows if r[1] == "complete"]
    # The search ran with --max-flops-ratio 1.5 at a 200M target: the box ends at 300M FLOPs.
    assert series["y"][-1] == pytest.approx(hypervolume([f for f, _ in complete], [a for _, a in complete], 300e6))
    assert series["y"] == sorted(series["y"]) and 0 < series["y"][-1] < 1
    assert figure_json(at, 1)["layout"]["yaxis"]["title"]["text"] == "hypervolume"


def test_trials_page_shows_the_zero_cost_score_of_a_prescreened_search(tmp_path, monkeypatch):
    db = tmp_path / "screened.db"
    cli("nas.search", "--target-flops", "200M", "--trials", "2", "--epochs", "1", "--subset", "300", "--strategy",
        "random", "--prescreen", "3", "--no-reference", "--threads", "1", "--db", str(db), cwd=tmp_path)
    at = go_to(app_for(db, monkeypatch), "Trials")
    table = at.dataframe[0].value
    with sqlite3.connect(db) as c:
        stored = [r[0] for r in c.execute("select zero_cost_score from trials order by number")]
    assert len(stored) == 2 and all(score is not None for score in stored)
    assert list(table["zero-cost score"]) == pytest.approx(stored)


def test_a_halving_search_shows_each_trials_fidelity_and_keeps_stopped_trials_off_the_front(tmp_path, monkeypatch):
    db = tmp_path / "halving.db"
    cli("nas.search", "--target-flops", "200M", "--trials", "6", "--epochs", "2", "--subset", "300", "--fidelity",
        "halving", "--no-reference", "--threads", "1", "--db", str(db), cwd=tmp_path)
    with sqlite3.connect(db) as c:
        stored = c.execute("select epochs, partial, flops, accuracy from trials where status='complete' "
                           "order by number").fetchall()
    full = [(f, a) for epochs, partial, f, a in stored if not partial]
    stopped = [(f, a) for epochs, partial, f, a in stored if partial]
    assert full and stopped
    at = go_to(app_for(db, monkeypatch), "Trials")
    table = at.dataframe[0].value
    complete = table[table["status"] == "complete"]
    assert list(complete["proxy epochs"]) == [row[0] for row in stored]
    assert list(complete["not fully trained"]) == [bool(row[1]) for row in stored]
    at = go_to(app_for(db, monkeypatch), "Pareto fronts")
    traces = {t["name"]: t for t in figure_json(at)["data"]}
    points = next(t for name, t in traces.items() if name.endswith(": trials"))
    grey = next(t for name, t in traces.items() if "stopped by successive halving" in name)
    front = next(t for name, t in traces.items() if name.endswith(": Pareto front"))
    assert sorted(zip(points["x"], points["y"])) == sorted(full)
    assert sorted(zip(grey["x"], grey["y"])) == sorted(stopped)
    assert set(zip(front["x"], front["y"])) <= set(full)


def test_progress_counts_trials_handed_to_trial_processes_but_plots_only_finished_ones():
    from dashboard.figures import progress_data
    from effnas.records import TrialPoint, TrialRole, TrialStatus

    def point(number, status, reward=None):
        return TrialPoint(number, 1, number, TrialRole.CANDIDATE, TrialStatus(status), 1, 1, reward, reward, "")

    data = progress_data([point(1, "complete", 0.5), point(2, "queued"), point(3, "running"), point(4, "failed"),
                          point(5, "complete", 0.7)])
    assert data.numbers == [1, 4, 5] and data.rewards == [0.5, 0.0, 0.7]
    assert data.best_so_far == [0.5, 0.5, 0.7]


def test_family_page_shows_members_and_ideal_line(filled_db, monkeypatch):
    at = go_to(app_for(filled_db, monkeypatch), "Families")
    table = at.dataframe[0].value
    assert list(table["name"]) == ["B0", "B1", "B2", "B3"]
    scaling = {t["name"]: t for t in figure_json(at, 0)["data"]}
    assert scaling["ideal FLOPs: B0 x 2^phi"]["y"][3] == scaling["FLOPs"]["y"][0] * 8
    assert figure_json(at, 0)["layout"]["yaxis"]["type"] == "log"


def test_empty_and_missing_databases_show_how_to_start(tmp_path, monkeypatch):
    at = app_for(tmp_path / "missing.db", monkeypatch)
    at.run()
    assert not at.exception and "python -m nas.search --target-flops 400M" in at.info[0].value
    assert not (tmp_path / "missing.db").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    at = app_for(empty, monkeypatch)
    at.run()
    assert not at.exception and "Start one" in at.info[0].value


def test_a_broken_file_or_foreign_schema_shows_one_clear_message(tmp_path, monkeypatch):
    broken = tmp_path / "broken.db"
    broken.write_text("this is not sqlite" * 100)
    at = app_for(broken, monkeypatch)
    at.run()
    assert not at.exception and len(at.error) == 1 and "not a database" in at.error[0].value
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("create table users (id integer primary key, name text)")
    at = app_for(foreign, monkeypatch)
    at.run()
    assert not at.exception and len(at.error) == 1 and "not an effnas database" in at.error[0].value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def browser_on_app(db, tmp_path, page):
    """`streamlit run` on a free loopback port and headless Chromium (Debian's) opened on `page`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--", "--db", str(db)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.get(f"http://127.0.0.1:{port}/?page={page}")
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"


@pytest.mark.browser
def test_real_browser_draws_the_pareto_chart(filled_db, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with browser_on_app(filled_db, tmp_path, "pareto") as driver:
        wait = WebDriverWait(driver, 90)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .gl-container"))
        time.sleep(1)
        assert not driver.find_elements(By.CSS_SELECTOR, ERRORS)
        assert "Pareto fronts" in driver.page_source
        shot = tmp_path / "pareto.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000


@pytest.mark.browser
def test_real_browser_shows_a_running_search_live_without_reload(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    db = tmp_path / "live.db"
    with browser_on_app(db, tmp_path, "progress") as driver:
        wait = WebDriverWait(driver, 90)
        wait.until(lambda d: "python -m nas.search --target-flops 400M" in d.page_source)
        assert not db.exists()
        driver.execute_script("window.effnasMarker = 'no reload';")
        search = subprocess.Popen(
            [sys.executable, "-m", "nas.search", "--db", str(db), "--target-flops", "400M", "--trials", "3",
             "--no-reference", "--epochs", "1", "--subset", "300", "--threads", "1"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            def completed(d):
                values = [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid='stMetricValue']")]
                return values and values[0] == "3"
            WebDriverWait(driver, 180, poll_frequency=0.5).until(completed)
        finally:
            search.wait(timeout=120)
        assert driver.execute_script("return window.effnasMarker;") == "no reload"
        assert not driver.find_elements(By.CSS_SELECTOR, ERRORS)
        driver.save_screenshot(str(tmp_path / "live.png"))


def test_python_m_dashboard_serves_on_loopback(filled_db, tmp_path):
    import urllib.request

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--db", str(filled_db), "--port", str(port),
         "--server.headless", "true"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("python -m dashboard did not answer on 127.0.0.1")
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"127.0.0.1:{port}" in output


def test_python_m_dashboard_help_lists_its_own_options_and_bad_options_are_one_line(tmp_path):
    shown = subprocess.run([sys.executable, "-m", "dashboard", "--help"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0
    assert "--db" in shown.stdout and "--port" in shown.stdout and len(shown.stdout.splitlines()) < 25
    bad = subprocess.run([sys.executable, "-m", "dashboard", "--colour", "red"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--colour" in bad.stderr


def test_training_page_draws_the_learning_curve_of_a_run(filled_db, monkeypatch):
    at = go_to(app_for(filled_db, monkeypatch), "Training")
    assert not at.exception
    curve = figure_json(at)
    names = {trace["name"] for trace in curve["data"]}
    assert {"validation accuracy (raw weights)", "validation accuracy (EMA weights)", "training loss"} <= names
    assert [len(trace["x"]) for trace in curve["data"]] == [2, 2, 2]  # two epochs each
    assert "trained accuracy" in " ".join(c.value for c in at.caption)


def test_family_page_compares_trained_families_with_error_bars_and_the_front(filled_db, monkeypatch):
    with sqlite3.connect(filled_db) as c:
        tested = {}
        for family, member, accuracy in c.execute("select family_id, member, test_accuracy from training_runs "
                                                  "where status='complete'"):
            tested.setdefault((family, member), []).append(accuracy)
    assert {len(v) for v in tested.values()} == {2}  # two seeds each
    at = go_to(app_for(filled_db, monkeypatch), "Families")
    assert not at.exception
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    trained = [chart for chart in charts if chart["layout"]["yaxis"]["title"]["text"].startswith("trained test accuracy")]
    # Against FLOPs, params and the latency scaling.grow measured (at batch 1, its front over latency).
    assert [chart["layout"]["xaxis"]["title"]["text"].split()[0] for chart in trained] == ["FLOPs", "parameters",
                                                                                          "latency"]
    # Every figure says what training it shows.
    assert {chart["layout"]["title"]["text"] for chart in trained} == {"trained on 300 training images x 2 epochs"}
    latency = {t["name"]: t for t in trained[2]["data"]}
    assert all(x is None or x > 0 for t in latency.values() for x in t["x"]) and latency["Pareto front"]["x"]
    traces = {t["name"]: t for t in trained[0]["data"]}
    compound = next(t for name, t in traces.items() if name.startswith("1: "))
    width = next(t for name, t in traces.items() if name.startswith("2: "))
    assert compound["y"] == pytest.approx([statistics.fmean(tested[(1, "B0")]), statistics.fmean(tested[(1, "B1")])])
    assert compound["error_y"]["array"] == pytest.approx([statistics.stdev(tested[(1, "B0")]),
                                                          statistics.stdev(tested[(1, "B1")])])
    assert width["y"] == pytest.approx([statistics.fmean(tested[(2, "B1")])])
    assert "Pareto front" in traces and traces["Pareto front"]["y"]
    comparison = next(d.value for d in at.dataframe if "Pareto front" in d.value.columns)
    assert len(comparison) == 3 and comparison["Pareto front"].any()
    table = at.dataframe[0].value
    assert "proxy accuracy" in table.columns and table["ms, batch 1"].notna().any()
    trained_members = table[table["test accuracy (exported run)"].notna()]
    assert len(trained_members) >= 1
    assert set(trained_members["budget (exported run)"]) == {"300 training images x 2 epochs"}


def test_training_page_shows_the_recipe_as_a_table_and_epochs_on_whole_ticks(filled_db, monkeypatch):
    at = go_to(app_for(filled_db, monkeypatch), "Training")
    recipe = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert dict(zip(recipe["setting"], recipe["value"]))["epochs"] == "2"
    axis = figure_json(at)["layout"]["xaxis"]
    assert axis["tickmode"] == "linear" and axis["dtick"] == 1 and axis["tick0"] == 1


@pytest.mark.browser
def test_real_browser_draws_every_family_with_error_bars(filled_db, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with browser_on_app(filled_db, tmp_path, "families") as driver:
        wait = WebDriverWait(driver, 90)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 4)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot path.yerror"))
        time.sleep(1)
        assert not driver.find_elements(By.CSS_SELECTOR, ERRORS)
        legend = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .legendtext"))
        assert "1: " in legend and "2: " in legend and "Pareto front" in legend
        # Three trained members with two seeds each, on two charts (FLOPs and params).
        assert len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot path.yerror")) >= 6
        shot = tmp_path / "families.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
