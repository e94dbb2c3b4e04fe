"""The docs cannot drift: every results table is what its committed bench JSON renders, and the bench driver knows
every bench."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import results_pages  # noqa: E402  (a script folder, not a package)

NOT_BENCHES = {"bench_json", "partial_runs", "results_pages", "__main__"}


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


def test_a_figure_quoted_in_prose_is_rendered_from_its_json_and_a_bad_reference_is_named():
    marked = "tau <!-- figure supernet_fidelity/references/FLOPs alone/tau | .3f -->0.5<!-- /figure --> alone"
    tau = results_pages.read_json(ROOT / "bench" / "supernet_fidelity.json")["references"]["FLOPs alone"]["tau"]
    assert results_pages.with_prose_figures(marked) == marked.replace("-->0.5<", f"-->{tau:.3f}<")
    with pytest.raises(results_pages.FigureError, match="has no 'FLOPs only'"):
        results_pages.with_prose_figures(marked.replace("FLOPs alone", "FLOPs only"))
    with pytest.raises(results_pages.FigureError, match="line 2 opens with a figure"):
        results_pages.with_prose_figures(marked.replace("tau ", "tau\n"))
    # The README's supernet sentence is one of them: its figures come from the bench, not from a hand.
    assert "<!-- figure supernet_fidelity/references/proxy seed 0 vs seed 1/tau" in (ROOT / "README.md").read_text()


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
