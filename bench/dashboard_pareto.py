"""Time the dashboard's Pareto page on one search with 10,000 trials.

Run: .venv/bin/python bench/dashboard_pareto.py [--trials 10000] [--browser]
Seeds a temporary SQLite database with one search of N trials: real architectures sampled from the search
space with their analytic FLOPs and params, and synthetic accuracies (this measures the page, not a search).
Reports the Pareto function alone, the page's script run (Streamlit AppTest: queries, Pareto fronts, figures),
and with --browser the time until headless Chromium has drawn the chart. Results go to
bench/dashboard_pareto.json (or --out).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_json import default_path, write_json  # noqa: E402

from db import open_database, searches, trials  # noqa: E402
from effnas.records import TrialRole  # noqa: E402
from nas.evaluation.pareto import pareto_front  # noqa: E402
from nas.search.study import arch_key, new_trial  # noqa: E402
from nas.space.flops import count_flops, count_params  # noqa: E402
from nas.space.search_space import SearchSpace  # noqa: E402


def seed(db_file: Path, count: int) -> None:
    db = open_database(f"sqlite:///{db_file}")
    space = SearchSpace(num_classes=10, in_channels=1)
    rng = random.Random(0)
    rows, seen = [], set()
    while len(rows) < count:
        sample = {label: rng.choice(values) for label, values in space.choices()}
        spec = space.decode(sample)
        key = arch_key(spec)
        if key in seen:
            continue
        seen.add(key)
        flops = count_flops(spec)
        accuracy = min(0.99, max(0.05, 0.55 + 0.1 * (flops / 4e8) ** 0.5 + rng.gauss(0, 0.08)))
        trial = new_trial(spec, TrialRole.CANDIDATE, sample, flops, count_params(spec))
        rows.append((trial, accuracy, accuracy * (flops / 4e8) ** -0.07))
    search_id = searches.create_search(db, name="bench-10k", strategy="random", dataset="mnist",
                                       target_flops=400_000_000, resolution=224, seed=0, max_trials=count, config={})
    trials.add_completed_trials(db, search_id, rows)


def time_apptest(db: Path, repeats: int = 3) -> list[float]:
    from streamlit.testing.v1 import AppTest

    # Streamlit warns about a missing ScriptRunContext on every bare-mode run: not news to someone timing the page.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").disabled = True

    os.environ["EFFNAS_DB"] = f"sqlite:///{db}"
    times = []
    for _ in range(repeats):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.query_params["page"] = "pareto"
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
        assert not at.exception, at.exception
        assert len(at.get("plotly_chart")) == 1
    return times


def time_browser(db: Path) -> tuple[float, float, float, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--",
         "--db", str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        chart = ".js-plotly-plot .gl-container"
        driver.get(f"http://127.0.0.1:{port}/?page=searches")  # warm the server: imports, engine
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='stDataFrame']"))
        start = time.perf_counter()
        driver.get(f"http://127.0.0.1:{port}/?page=searches")
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='stDataFrame']"))
        shell = time.perf_counter() - start
        # in-app navigation: click the sidebar entry, as a user does
        start = time.perf_counter()
        label = next(e for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebar'] label")
                     if "Pareto fronts" in e.text)
        label.click()
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, chart))
        click = time.perf_counter() - start
        # again, now that the browser has Plotly loaded: the steady state of moving between pages
        next(e for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebar'] label")
             if "Searches" in e.text).click()
        WebDriverWait(driver, 120).until(lambda d: not d.find_elements(By.CSS_SELECTOR, chart))
        start = time.perf_counter()
        next(e for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebar'] label")
             if "Pareto fronts" in e.text).click()
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, chart))
        again = time.perf_counter() - start
        start = time.perf_counter()
        driver.get(f"http://127.0.0.1:{port}/?page=pareto")
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, chart))
        return shell, click, again, time.perf_counter() - start
    finally:
        driver.quit()
        server.terminate()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        start = time.perf_counter()
        seed(db, args.trials)
        print(f"seeded {args.trials} trials in {time.perf_counter() - start:.1f} s")
        rng = random.Random(1)
        costs = [rng.random() for _ in range(args.trials)]
        accs = [rng.random() for _ in range(args.trials)]
        start = time.perf_counter()
        front = pareto_front(costs, accs)
        front_ms = 1000 * (time.perf_counter() - start)
        print(f"pareto_front on {args.trials} points: {front_ms:.1f} ms ({len(front)} on the front)")
        results = {"trials": args.trials, "pareto_front_ms": front_ms, "front_size": len(front)}
        times = time_apptest(db)
        print(f"Pareto page script run (AppTest), {args.trials} trials: "
              + ", ".join(f"{t:.2f} s" for t in times) + f" (best {min(times):.2f} s)")
        results["page_script_seconds"] = times
        if args.browser:
            shell, click, again, load = time_browser(db)
            print("headless Chromium, until the chart is drawn:")
            print(f"  fresh page load of ?page=pareto       : {load:.2f} s (the app shell alone, chart-free "
                  f"Searches page: {shell:.2f} s)")
            print(f"  click 'Pareto fronts', first chart    : {click:.2f} s (includes loading Plotly's JavaScript)")
            print(f"  click 'Pareto fronts', later          : {again:.2f} s")
            results["browser_seconds"] = {"app_shell": shell, "fresh_page_load": load, "first_click": click,
                                          "later_click": again}
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
