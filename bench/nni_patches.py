"""Does each NNI patch have a test that fails without it? A mutation check of nas/search/nni_manager_preload.js and
nas/search/nni_internals.py.

Run: .venv/bin/python bench/nni_patches.py [--only NAME,...]   (about 40 minutes on 2 cores; needs PostgreSQL and
OpenSSH's server for the remote tests, as .ci/run sets them up, with $EFFNAS_TEST_PG naming the server)

For each patch: a copy of the checkout (`git worktree` at HEAD) with that one patch taken out by a text edit, and
the tests the patch's comment names run against the copy (PYTHONPATH points every process, NNI's trial processes
included, at it). A patch is guarded when at least one of its tests fails without it; a control run of every test
in an unedited copy must pass. Results go to
bench/nni_patches.json: per patch, the edit, the tests, which failed, and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

from bench_json import default_path, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PRELOAD = "nas/search/nni_manager_preload.js"
INTERNALS = "nas/search/nni_internals.py"
PARALLEL = "tests/search/test_parallel.py::"
REMOTE = "tests/search/test_remote.py::"
INTERNAL_TESTS = "tests/search/test_nni_internals.py::"
# name: (file, text, the text without the patch, tests that name the patch)
PATCHES: dict[str, tuple[str, str, str, list[str]]] = {
    "manager address": (PRELOAD, "if (address) {", "if (false) {", [
        f"{PARALLEL}test_two_workers_train_in_separate_processes_with_the_results_of_one"]),
    "manager ends with its parent": (PRELOAD, "if (process.ppid !== parent) {", "if (false) {", [
        f"{PARALLEL}test_sigkill_of_the_search_takes_manager_and_trials_along_and_resume_finishes"]),
    "no pip upgrade on remote machines": (
        PRELOAD, "return / -m pip install nni --upgrade$/.test(command) ? Promise.resolve(\"\") : run.call(this, command);",
        "return run.call(this, command);", [
            f"{REMOTE}test_remote_trials_land_once_with_the_architectures_of_an_in_process_search"]),
    "SSH error logged": (
        PRELOAD, 'client.on("error", (error) => this.log.error("SSH connection error:", error.message));', "", [
            f"{REMOTE}test_remote_trials_land_once_with_the_architectures_of_an_in_process_search"]),
    "SSH reconnects on the next command": (PRELOAD, "    if (this.client === null) {", "    if (false) {", [
        f"{REMOTE}test_remote_trials_land_once_with_the_architectures_of_an_in_process_search"]),
    "lost machine's trials end SYS_CANCELED": (PRELOAD, "        lostTrials.add(trialId);", "", [
        f"{REMOTE}test_a_lost_machine_interrupts_its_trials_the_search_goes_on_and_resume_trains_them"]),
    "each parameter to its own trial": (PRELOAD, "    if (queued >= 0) {", "    if (false) {", [
        f"{PARALLEL}test_a_killed_trial_process_is_recorded_failed_and_the_search_goes_on",
        f"{REMOTE}test_a_remote_trial_process_that_starts_late_trains_its_own_candidate"]),
    "evaluator gets the sample": (INTERNALS, "    def _execute(self, model: Any) -> Any:",
                                  "    def _execute_unpatched(self, model: Any) -> Any:", [
        f"{INTERNAL_TESTS}test_the_evaluator_gets_the_sample_and_builds_nothing"]),
    "TPE without the pause in process": (INTERNALS, "        if not isinstance(self.engine, SequentialExecutionEngine):",
                                         "        if True:", [
        f"{INTERNAL_TESTS}test_tpe_in_process_proposes_what_nni_does_without_pausing"]),
    "trial end callback": (INTERNALS, "    def _trial_end_callback(self, command: Any) -> None:",
                           "    def _trial_end_callback_unpatched(self, command: Any) -> None:", [
        f"{PARALLEL}test_a_killed_trial_process_is_recorded_failed_and_the_search_goes_on"]),
    "trial command's Python": (INTERNALS, '    config._trial_command_params = {"python": python, "envs": environment}',
                               "    del python, environment", [
        f"{INTERNAL_TESTS}test_the_trial_command_starts_the_python_given"]),
}


# The control: every test above in an unedited copy, where each must pass for the failures to mean anything.
CONTROL = "none removed (control)"
PATCHES[CONTROL] = ("", "", "", list(dict.fromkeys(test for *_, tests in PATCHES.values() for test in tests)))


def mutated_checkout(folder: Path, path: str, text: str, replacement: str) -> None:
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(folder), "HEAD"], cwd=REPO, check=True)
    if not path:
        return
    target = folder / path
    source = target.read_text()
    if source.count(text) != 1:
        raise SystemExit(f"{path}: the patch's text is not there exactly once: {text!r}")
    target.write_text(source.replace(text, replacement))


def run_tests(folder: Path, tests: list[str]) -> dict[str, str]:
    """Each test id's outcome in the mutated checkout: passed, failed or skipped."""
    report = folder / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, "--junit-xml", str(report)],
        cwd=folder, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(folder), "EFFNAS_DB": ""})
    if result.returncode not in (0, 1) or not report.is_file():
        raise SystemExit(f"pytest could not run {tests}: exit {result.returncode}\n{result.stdout[-2000:]}")
    cases: dict[str, set[str]] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        # A parametrized test counts as failed when any of its cases failed.
        cases.setdefault(case.get("name").split("[")[0], set()).add(
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
    outcomes = {}
    for test in tests:
        found = cases.get(test.split("::")[1], set())
        outcomes[test] = next((kind for kind in ("failed", "skipped", "passed") if kind in found), "not run")
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="only these patches (names as in the JSON), comma-separated")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args = parser.parse_args()
    out = Path(args.out)
    stored = json.loads(out.read_text()).get("patches", {}) if out.is_file() else {}
    results = {name: result for name, result in stored.items() if name in PATCHES}  # patches since removed go
    names = args.only.split(",") if args.only else [CONTROL, *(name for name in PATCHES if name != CONTROL)]
    for name in names:
        path, text, replacement, tests = PATCHES[name]
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "checkout"
            try:
                mutated_checkout(folder, path, text, replacement)
                outcomes = run_tests(folder, tests)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO, check=False)
        failed = [test for test, outcome in outcomes.items() if outcome == "failed"]
        results[name] = {"file": path, "removed": text, "replaced_by": replacement,
                         "without_the_patch": outcomes, "guarded": bool(failed),
                         "seconds": round(time.monotonic() - started)}
        verdict = "control" if name == CONTROL else "guarded" if failed else "NOT guarded"
        print(f"{name}: {verdict} ({len(failed)} of {len(tests)} tests fail without it; "
              f"{', '.join(sorted(set(outcomes.values())))}; {results[name]['seconds']} s)", flush=True)
        patches = [r for key, r in results.items() if key != CONTROL]
        control = results.get(CONTROL)
        write_json(out, {"patches": results, "control passed": None if control is None else
                         set(control["without_the_patch"].values()) == {"passed"},
                         "all guarded": all(r["guarded"] for r in patches) and len(patches) == len(PATCHES) - 1})
    return 0


if __name__ == "__main__":
    sys.exit(main())
