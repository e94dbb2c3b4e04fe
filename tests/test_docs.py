"""The docs cannot drift: every results table is what its committed bench JSON renders, and the bench driver knows
every bench."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_BENCHES = {"bench_json", "results_pages", "__main__"}


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True)


def test_every_results_table_is_what_its_json_renders():
    result = subprocess.run([sys.executable, "bench/results_pages.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_a_changed_figure_makes_its_table_stale(tmp_path):
    # The check compares against what the JSON renders: a committed table edited by hand no longer matches.
    tables = ROOT / "docs" / "results" / "tables"
    page = tables / "search_speed.md"
    original = page.read_text()
    try:
        page.write_text(original.replace("|", "| 1", 1))
        result = subprocess.run([sys.executable, "bench/results_pages.py", "--check"], cwd=ROOT, capture_output=True,
                                text=True)
        assert result.returncode == 1 and "search_speed.md" in result.stderr
    finally:
        page.write_text(original)


def test_the_bench_driver_lists_every_bench_script_with_a_budget():
    listed = bench()
    assert listed.returncode == 0
    scripts = {path.stem for path in (ROOT / "bench").glob("*.py")} - NOT_BENCHES
    names = {line.split()[0] for line in listed.stdout.splitlines()[1:] if line and not line.startswith(
        ("surrogate-chain", "Budgets"))}
    assert names == scripts


def test_a_budget_runs_the_benches_that_fit_and_the_chain_runs_in_order():
    quick = bench("run", "--budget", "5m", "--dry-run")
    assert quick.returncode == 0
    assert "bench/flops_counters.py" in quick.stdout and "bench/search_confirm.py" not in quick.stdout
    chain = bench("run", "surrogate-chain", "--dry-run").stdout
    order = [chain.index(f"bench/{name}.py") for name in ("evaluation_table", "surrogate_fit", "search_surrogate",
                                                          "surrogate_winners", "search_confirm")]
    assert order == sorted(order)


def test_an_unknown_bench_is_one_line_and_exit_2():
    result = bench("run", "no_such_bench")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no_such_bench" in result.stderr
