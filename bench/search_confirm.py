"""Does a better search find a better network? Strategies on real proxy training, their winners retrained.

Run: .venv/bin/python bench/search_confirm.py [--strategies tpe,random] [--seeds 0,1,2,3,4]
                                             [--trials 60]
                                             [--workers 1] [--stop-after 3h] [--commit]

Each search is a real `python -m nas.search --dataset fashion-mnist --resolution 32 --target-flops 8M` run (the task
of bench/evaluation_table.py) with `--trials 60 --time-budget none --no-reference --threads 1` and the strategy and
seed, into its own database, bench/search_confirm/<strategy>-seed<seed>.db (committed); `--workers N` runs N at
once, and then N winners' trainings at once (each with cores / N threads). At `--stop-after` the running searches
are interrupted as a user would (Ctrl-C) and the next run resumes them with `nas.search --resume`, on this machine
or another. Its winner is then trained with bench/proxy_fidelity.py's reference recipe (the final-training recipe, 5
epochs on 20,000 Fashion-MNIST images at 32 px, 5,000 of them for validation; test accuracy on t10k) at seeds 0 and
1. Per strategy, mean and sd over search seeds of: the hypervolume of the (FLOPs, proxy accuracy) front (FLOPs / (4
x target) and 1 - accuracy, reference point (1, 1)), the best reward, and the winner's reference test accuracy (the
mean of its two seeds) and the search's reward of it, the number of trained candidates within the target FLOPs,
and the one-sided Mann-Whitney p-value that a strategy's values exceed random's; per search also the best proxy
accuracy within the target (none where no candidate came in under it). FLOPs are multiply-accumulates of conv and
linear layers at 32 px. Budget: about 45 minutes per search and 6 per winner on 2 cores, so the default (2
strategies x 5 seeds) is about 9 hours from scratch: results go to bench/search_confirm.json after every search and
every winner, and a rerun continues from there.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from bench_json import default_path, write_json
from scipy.stats import mannwhitneyu

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from effnas.cli import UsageError, parse_duration  # noqa: E402

TARGET_FLOPS = 8e6
TASK = ["--dataset", "fashion-mnist", "--resolution", "32", "--target-flops", f"{TARGET_FLOPS / 1e6:g}M"]
# The searches' databases are committed: a search interrupted here is resumed on the next machine.
FOLDER = HERE / "search_confirm"
REFERENCE_SEEDS = (0, 1)
# A reference worker's data set, loaded once per spawned process by _start_reference_worker.
_reference_data: Any = None


class RunningSearch:
    """One `nas.search` process of the bench, started fresh or resuming the search stored in its database."""

    def __init__(self, strategy: str, seed: int, trials: int) -> None:
        self.strategy, self.seed = strategy, seed
        self.name = search_name(strategy, seed)
        self.db_path = FOLDER / f"{self.name}.db"
        row = stored_search(self.db_path, self.name)
        args = (["--resume", str(row.id), "--trials", str(trials)] if row is not None else
                [*TASK, "--strategy", strategy, "--seed", str(seed), "--trials", str(trials), "--time-budget", "none",
                 "--no-reference", "--threads", "1", "--name", self.name])
        self.log = (FOLDER / f"{self.name}.log").open("a")
        self.process = subprocess.Popen([sys.executable, "-m", "nas.search", "--db", str(self.db_path), *args],
                                        cwd=FOLDER, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "EFFNAS_DB": "",
                                             "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})

    def finished(self) -> bool:
        """Whether the search ran to its end; SystemExit with its last line when it failed."""
        code = self.process.wait()
        self.log.close()
        if code in (130, -signal.SIGINT):  # interrupted by run_searches: 130 once nas.search handles Ctrl-C
            return False
        if code != 0:
            lines = (FOLDER / f"{self.name}.log").read_text().strip().splitlines()
            raise SystemExit(f"{self.name} failed: {lines[-1] if lines else f'exit {code}'}")
        return True


def search_name(strategy: str, seed: int) -> str:
    """The search's name, and its database's and log's file name in FOLDER."""
    return f"{strategy}-seed{seed}"


def stored_search(db_path: Path, name: str) -> Any:
    from db import open_database
    from db.searches import list_searches

    if not db_path.exists():
        return None
    return next((row for row in list_searches(open_database(f"sqlite:///{db_path}", create=False))
                 if row.name == name), None)


def run_searches(todo: list[tuple[str, int]], trials: int, workers: int, deadline: float,
                 finished: Callable[[str, int], None]) -> None:
    """The searches of `todo`, `workers` at a time; at `deadline` the running ones are interrupted (Ctrl-C, as a
    user would) and stay in their databases to be resumed by the next run."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    waiting = list(todo)
    running: list[RunningSearch] = []
    try:
        while waiting or running:
            while waiting and len(running) < workers and time.monotonic() < deadline:
                running.append(RunningSearch(*waiting.pop(0), trials))
            if not running or time.monotonic() >= deadline:
                return
            for search in [s for s in running if s.process.poll() is not None]:
                running.remove(search)
                if search.finished():
                    finished(search.strategy, search.seed)
            time.sleep(1.0)
    finally:
        for search in running:
            search.process.send_signal(signal.SIGINT)
        for search in running:
            search.finished()


def search_figures(strategy: str, seed: int) -> dict[str, Any]:
    from db import open_database, searches, trials
    from effnas.records import TrialRole, TrialStatus
    from nas.evaluation.pareto import hypervolume

    db_path = FOLDER / f"{search_name(strategy, seed)}.db"
    search_id = stored_search(db_path, search_name(strategy, seed)).id
    db = open_database(f"sqlite:///{db_path}", create=False)
    row = searches.get_search(db, search_id)
    points = [t for t in trials.list_trials(db, search_id) if t.role is TrialRole.CANDIDATE]
    full = [t for t in points if t.status is TrialStatus.COMPLETE and not t.partial]
    winner = trials.best_trial(db, search_id)
    within_target = [t for t in full if t.flops <= row.target_flops]
    return {
        "search_id": search_id, "trials": len(points),
        "hypervolume": hypervolume([t.flops for t in full], [t.accuracy for t in full], 4 * row.target_flops),
        "best_reward": winner.reward, "winner": {"arch": winner.arch, "block_strings": winner.block_strings,
                                                 "flops": winner.flops, "params": winner.params,
                                                 "proxy_accuracy": winner.accuracy},
        "trials_within_target": len(within_target),
        "best_proxy_accuracy_within_target": max((t.accuracy for t in within_target), default=None),
        "training_seconds": sum((t.train_seconds or 0) + (t.eval_seconds or 0) for t in points),
    }


def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from nas.evaluation.reward import reward

    summary: dict[str, Any] = {}
    for key, run in runs.items():
        strategy = key.split("/")[0]
        if len(run.get("reference", {})) < len(REFERENCE_SEEDS):
            continue
        entry = summary.setdefault(strategy, {"hypervolume": [], "best_reward": [], "winner_test_accuracy": [],
                                              "winner_test_reward": [], "trials_within_target": []})
        entry["hypervolume"].append(run["hypervolume"])
        entry["best_reward"].append(run["best_reward"])
        entry["trials_within_target"].append(run["trials_within_target"])
        test_accuracy = statistics.fmean(run["reference"].values())
        entry["winner_test_accuracy"].append(test_accuracy)
        entry["winner_test_reward"].append(reward(test_accuracy, run["winner"]["flops"], TARGET_FLOPS))
    result = {strategy: {"seeds": len(entry["hypervolume"]), **{k: mean_sd(v) for k, v in entry.items()}}
              for strategy, entry in summary.items()}
    for strategy, entry in summary.items():
        if strategy != "random" and len(entry["hypervolume"]) > 1 and len(summary.get("random", {}).get(
                "hypervolume", [])) > 1:
            result[strategy]["p_value_against_random"] = {
                metric: float(mannwhitneyu(values, summary["random"][metric], alternative="greater").pvalue)
                for metric, values in entry.items()}
    return result


def parse_arguments() -> tuple[argparse.Namespace, list[str], list[int], float]:
    """The options, strategies, seeds and time limit; exit 2 with one line on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="tpe,random",
                        help="the new default against random (tpe,random); reinforce and evolution may join")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1, help="searches at once, each its own process (1)")
    parser.add_argument("--stop-after", help="after this long, interrupt the running searches (resumed by the next "
                                             "run) and start no new training, e.g. 3h")
    parser.add_argument("--commit", action="store_true", help="git-commit the JSON after every search and winner")
    parser.add_argument("--out", default=str(default_path(__file__)))
    args = parser.parse_args()
    from nas.search.config import STRATEGIES

    strategies = [name for name in args.strategies.split(",") if name]
    unknown = [name for name in strategies if name not in STRATEGIES]
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
        limit = parse_duration(args.stop_after) if args.stop_after else math.inf
    except (ValueError, UsageError) as exc:
        print(f"search_confirm: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if unknown or args.trials < 1 or args.workers < 1:
        print(f"search_confirm: unknown strategy {unknown[0]!r}" if unknown else "search_confirm: --trials and "
              "--workers must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    return args, strategies, seeds, limit


def main() -> int:
    args, strategies, seeds, limit = parse_arguments()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    runs = results.setdefault("runs", {})
    started = time.monotonic()

    def save(message: str) -> None:
        results["summary"] = summarise(runs)
        results["setup"] = {"search": " ".join(["nas.search", *TASK, "--trials", str(args.trials),
                                                "--time-budget none --no-reference --threads 1"]),
                            "reference": "bench/proxy_fidelity.py's reference recipe: 5 epochs on 20,000 images, "
                                         "test accuracy on t10k, seeds 0 and 1",
                            "flops": "multiply-accumulates of conv and linear layers at 32 px"}
        write_json(out, {k: v for k, v in results.items() if k not in ("command", "date", "machine")})
        if args.commit:
            subprocess.run(["git", "add", "--", str(out)], cwd=REPO, check=False)
            subprocess.run(["git", "commit", "-q", "-m", f"bench/search_confirm: {message}", "--", str(out)], cwd=REPO,
                           check=False)

    def searched(strategy: str, seed: int) -> None:
        key = f"{strategy}/{seed}"
        runs[key] = {**search_figures(strategy, seed), "reference": {}}
        print(f"{key}: hypervolume {runs[key]['hypervolume']:.4f}, best reward {runs[key]['best_reward']:.4f}",
              flush=True)
        save(f"{key} searched")

    for key, run in runs.items():  # figures added to search_figures since the search was stored
        strategy, seed = key.split("/")
        if "trials_within_target" not in run and (FOLDER / f"{search_name(strategy, int(seed))}.db").is_file():
            runs[key] = {**search_figures(strategy, int(seed)), "reference": run["reference"]}
    todo = [(strategy, seed) for seed in seeds for strategy in strategies if f"{strategy}/{seed}" not in runs]
    run_searches(todo, args.trials, args.workers, started + limit, searched)
    references = [(f"{strategy}/{seed}", reference_seed) for seed in seeds for strategy in strategies
                  for reference_seed in REFERENCE_SEEDS
                  if f"{strategy}/{seed}" in runs and str(reference_seed) not in runs[f"{strategy}/{seed}"]["reference"]]

    def trained(key: str, reference_seed: int, test_accuracy: float) -> None:
        runs[key]["reference"][str(reference_seed)] = test_accuracy
        print(f"{key}: winner's test accuracy at seed {reference_seed}: {test_accuracy:.4f}", flush=True)
        save(f"{key} winner at seed {reference_seed}")

    train_winners([(key, seed, runs[key]["winner"]["arch"]) for key, seed in references], args.workers,
                  started + limit, trained)
    if results.get("summary") != summarise(runs):  # summarised by an earlier version of this script
        save("summary recomputed")
    return 0


def _start_reference_worker(threads: int) -> None:
    global _reference_data
    from proxy_fidelity import reference_data

    _reference_data = reference_data(threads=threads)


def _train_reference(arch: dict[str, Any], seed: int) -> float:
    from proxy_fidelity import reference_training

    from nas.space.spec import spec_from_dict

    return reference_training(spec_from_dict(arch), _reference_data, seed)["test_accuracy"]


def train_winners(todo: list[tuple[str, int, dict[str, Any]]], workers: int, deadline: float,
                  trained: Callable[[str, int, float], None]) -> None:
    """Each (key, seed, architecture) of `todo` trained with the reference recipe, `workers` at a time in spawned
    processes sharing the cores; none is started after `deadline`, the ones running then finish."""
    if not todo or time.monotonic() >= deadline:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    waiting = list(todo)
    started = time.monotonic()
    print(f"retraining {len(todo)} winner runs with the reference recipe, {workers} at a time", flush=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_reference_worker, initargs=(threads,)) as pool:
        running: dict[Future, tuple[str, int]] = {}
        while waiting or running:
            while waiting and len(running) < workers and time.monotonic() < deadline:
                key, seed, arch = waiting.pop(0)
                running[pool.submit(_train_reference, arch, seed)] = (key, seed)
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key, seed = running.pop(future)
                trained(key, seed, future.result())
                finished = len(todo) - len(waiting) - len(running)
                left = (time.monotonic() - started) / finished * (len(todo) - finished) / 60
                print(f"winner runs: {finished}/{len(todo)} done ({key}, seed {seed}), ~{left:.0f} min left",
                      flush=True)


if __name__ == "__main__":
    sys.exit(main())
