"""Does supernet scoring find better networks than proxy training in the same wall time?

Run: .venv/bin/python bench/supernet_search.py [--budgets 9m,30m] [--seeds 0,1,2,3,4]
                                              [--methods supernet,tpe,random] [--stop-after 3h]

Per method, time budget and seed, one `python -m nas.search --dataset fashion-mnist --resolution 32 --target-flops
8M --time-budget B --seed S` run from scratch in a folder of its own under bench/out/supernet_search/ (so a supernet
run trains its supernet within its budget): `supernet` is TPE with `--evaluator supernet` and the default
`--supernet-epochs` (1, about 2 minutes on 2 cores, at every budget: a search given 30 minutes gets that, and 2 or 4
epochs ranked the evaluation table no better, bench/supernet_fidelity.py), `tpe` the default before these figures
made supernet scoring the default (every candidate proxy-trained) and `random` `--strategy random`, both with
`--evaluator proxy`. Per method and budget, mean and sd over seeds, and the one-sided Mann-Whitney p that the
method's values exceed tpe's (and the p that they fall below it), of: candidates weighed (scored or trained), the
proxy-trained winner's reward, the hypervolume of the proxy-trained (FLOPs, proxy accuracy) front (FLOPs / (4 x
target) and 1 - accuracy, reference point (1, 1)), and the winner's test accuracy retrained with
bench/search_confirm.py's reference recipe (at reference seed 0: the spread over search seeds holds the retraining's
own seed noise, and a second seed would double hours of training; a winner another run already retrained is not
trained again, since the same architecture, recipe and seed train to the same network).
Reuse, separately:
after each supernet run, two more searches at 4M in the same folder reuse its stored supernet, one with the run's
time budget (candidates weighed against the first run's) and one with a quarter of it (does a second target
finish, its best proxy-trained, in under a third of the first run's wall time?). FLOPs are multiply-accumulates of
conv and linear layers at 32 px.

`--redo supernet/9m` sets a method's runs at a budget aside under "superseded" (with the commit they ran at) and
runs them again: for a change to the product or the bench that changes what they measure. `--no-reuse` skips the reuse runs;
a later run without it adds the reuse runs a finished supernet run lacks, while its folder is there.

Budget on 2 cores: (9 + 30 minutes) x 3 methods x 5 seeds of searches, about 3.5 hours with the reuse runs, plus
about 6 minutes per winner (30 winners, 3 hours): about 6.5 hours. Results go to bench/supernet_search.json after
every run and every winner, and a rerun continues from there (a run cut off mid-way is started again from scratch:
a partial run's wall time means nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_json import default_path, write_json
from scipy.stats import mannwhitneyu
from search_confirm import mean_sd, train_winners

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from effnas.cli import UsageError, parse_duration  # noqa: E402

TARGET_FLOPS = 8e6
TASK = ["--dataset", "fashion-mnist", "--resolution", "32", "--no-reference"]
# The proxy's default 40 trials ended a 30-minute run at about 18 minutes: the time budget must bind, as it does for
# the supernet's 5,000 (no 9-minute run came near either). nas.search now sets 5,000 itself for a proxy search given
# a --time-budget; the flag stays so the methods' commands are the ones every recorded run used.
METHODS = {"supernet": ["--strategy", "tpe", "--evaluator", "supernet"],
           "tpe": ["--strategy", "tpe", "--evaluator", "proxy", "--trials", "5000"],
           "random": ["--strategy", "random", "--evaluator", "proxy", "--trials", "5000"]}
OUT = HERE / "out" / "supernet_search"
METRICS = ("candidates", "best_reward", "winner_proxy_accuracy", "hypervolume", "winner_test_accuracy")
RETRAIN_SEEDS = (0,)
# Each reuse run's key and the fraction of the first run's time budget it gets.
REUSES = {"reuse_at_4M": 1.0, "reuse_at_4M_in_a_quarter": 0.25}


def run_search(folder: Path, args: list[str]) -> float:
    """One nas.search run in `folder` (its database s.db); its wall seconds."""
    started = time.monotonic()
    with (folder / "search.log").open("a") as log:
        code = subprocess.run([sys.executable, "-m", "nas.search", "--db", str(folder / "s.db"), *args], cwd=folder,
                              stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "EFFNAS_DB": "", "PYTHONPATH": str(REPO)}).returncode
    if code != 0:
        raise SystemExit(f"nas.search failed in {folder} (exit {code}); see {folder / 'search.log'}")
    return time.monotonic() - started


def search_figures(folder: Path, search_id: int, seconds: float) -> dict[str, Any]:
    from db import open_database, trials
    from effnas.records import TrialRole, TrialStatus
    from nas.evaluation.pareto import hypervolume

    db = open_database(f"sqlite:///{folder / 's.db'}", create=False)
    candidates = [t for t in trials.list_trials(db, search_id) if t.role is TrialRole.CANDIDATE]
    weighed = [t for t in candidates if t.status in (TrialStatus.COMPLETE, TrialStatus.REJECTED)]
    trained = [t for t in candidates if t.status is TrialStatus.COMPLETE and not t.partial]
    winner = trials.best_trial(db, search_id)
    return {
        "seconds": seconds, "candidates": len(weighed), "proxy_trained": len(trained),
        "hypervolume": hypervolume([t.flops for t in trained], [t.accuracy for t in trained], 4 * TARGET_FLOPS),
        "best_reward": None if winner is None else winner.reward,
        "winner": None if winner is None else {"arch": winner.arch, "block_strings": winner.block_strings,
                                               "flops": winner.flops, "proxy_accuracy": winner.accuracy},
    }


def run_folder(method: str, budget: str, seed: int) -> Path:
    return OUT / f"{method}-{budget}-seed{seed}"


def fresh_run(method: str, budget: str, seed: int) -> dict[str, Any]:
    """A run of `method` from scratch in a folder of its own."""
    folder = run_folder(method, budget, seed)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    common = [*TASK, *METHODS[method], "--time-budget", budget, "--seed", str(seed)]
    return search_figures(folder, 1, run_search(folder, [*common, "--target-flops", "8M"]))


def reuse_run(budget: str, seed: int, fraction: float) -> dict[str, Any] | None:
    """The search at 4M, given `fraction` of `budget`, on the supernet that the finished supernet run of `budget`
    and `seed` stored; None when that run's folder is gone (a fresh clone: bench/out is not committed)."""
    from db import open_database, searches

    folder = run_folder("supernet", budget, seed)
    if not (folder / "s.db").is_file():
        return None
    time_budget = f"{round(parse_duration(budget) * fraction)}s"
    common = [*TASK, *METHODS["supernet"], "--time-budget", time_budget, "--seed", str(seed)]
    seconds = run_search(folder, [*common, "--target-flops", "4M"])
    # A reuse run cut off earlier left a search of its own: the one just run is the newest.
    database = open_database(f"sqlite:///{folder / 's.db'}", create=False)
    search_id = max(row.id for row in searches.list_searches(database))
    figures = {k: v for k, v in search_figures(folder, search_id, seconds).items() if k != "winner"}
    return {"time_budget": time_budget, **figures}


def reuse_summary(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per reuse run kind, over the runs that have one: its candidates weighed and wall seconds, each also as a
    fraction of its first run's, and the fewest candidates it proxy-trained."""
    summary: dict[str, Any] = {}
    for reuse_key, fraction in REUSES.items():
        pairs = [(run, run[reuse_key]) for run in runs.values() if reuse_key in run]
        if pairs:
            summary[reuse_key] = {
                "budget_fraction": fraction, "runs": len(pairs),
                "candidates": mean_sd([reuse["candidates"] for _, reuse in pairs]),
                "candidates_over_first": mean_sd([reuse["candidates"] / run["candidates"] for run, reuse in pairs]),
                "seconds": mean_sd([reuse["seconds"] for _, reuse in pairs]),
                "seconds_over_first": mean_sd([reuse["seconds"] / run["seconds"] for run, reuse in pairs]),
                "fewest_proxy_trained": min(reuse["proxy_trained"] for _, reuse in pairs)}
    return summary


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per method and budget, over the finished runs: candidates weighed and hypervolume (0 for a run that
    proxy-trained nothing), the best reward, the winner's proxy accuracy and the range of the winners' FLOPs (in
    millions) of runs with a winner, the winner's test accuracy of runs whose winner
    is retrained at every reference seed; a metric's p against tpe once both have two values. In the reward's p a
    run without a winner ranks below every run with one: it handed its user nothing to deploy."""
    values: dict[str, dict[str, list[float]]] = {}
    ranked_rewards: dict[str, list[float]] = {}
    winner_mflops: dict[str, list[float]] = {}
    for key, run in runs.items():
        method, budget, _ = key.split("/")
        row = values.setdefault(f"{method}/{budget}", {metric: [] for metric in METRICS})
        row["candidates"].append(run["candidates"])
        row["hypervolume"].append(run["hypervolume"])
        if run["winner"] is not None:
            row["best_reward"].append(run["best_reward"])
            row["winner_proxy_accuracy"].append(run["winner"]["proxy_accuracy"])
            winner_mflops.setdefault(f"{method}/{budget}", []).append(run["winner"]["flops"] / 1e6)
        ranked_rewards.setdefault(f"{method}/{budget}", []).append(
            -math.inf if run["winner"] is None else run["best_reward"])
        if all(str(seed) in run.get("reference", {}) for seed in RETRAIN_SEEDS):
            row["winner_test_accuracy"].append(statistics.fmean(run["reference"][str(seed)] for seed in RETRAIN_SEEDS))
    summary: dict[str, Any] = {}
    for key, row in values.items():
        method, budget = key.split("/")
        summary[key] = {"seeds": len(row["candidates"]),
                        "runs_without_winner": sum(reward == -math.inf for reward in ranked_rewards[key]),
                        **{metric: mean_sd(v) for metric, v in row.items() if v}}
        if key in winner_mflops:
            summary[key]["winner_mflops_range"] = [min(winner_mflops[key]), max(winner_mflops[key])]
        reuses = reuse_summary({k: run for k, run in runs.items() if k.startswith(key + "/")})
        if reuses:
            summary[key]["reuse"] = reuses
        baseline = values.get(f"tpe/{budget}")
        if method != "tpe" and baseline:
            # With n runs against m a one-sided Mann-Whitney p cannot fall under 1 / C(n + m, n), reached when every
            # run lies on one side: with few seeds a p reads against this floor, not against 0.
            summary[key]["smallest_possible_p"] = 1 / math.comb(len(row["candidates"]) + len(baseline["candidates"]),
                                                                 len(row["candidates"]))
            tested = {**row, "best_reward": ranked_rewards[key]}
            untested = {**baseline, "best_reward": ranked_rewards[f"tpe/{budget}"]}
            for name, alternative in (("p_value_against_tpe", "greater"), ("p_value_below_tpe", "less")):
                summary[key][name] = {
                    metric: float(mannwhitneyu(tested[metric], untested[metric], alternative=alternative).pvalue)
                    for metric in METRICS if len(tested[metric]) > 1 and len(untested[metric]) > 1}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="9m,30m")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--stop-after", help="start no run or winner training after this long, e.g. 3h")
    parser.add_argument("--no-reuse", action="store_true", help="no reuse run after a supernet run")
    parser.add_argument("--redo", default="", help="METHOD/BUDGET: set its runs aside and run them again")
    parser.add_argument("--out", type=Path, default=default_path(__file__))
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    try:
        budgets = [b for b in args.budgets.split(",") if b]
        for budget in budgets:
            parse_duration(budget)
        seeds = [int(seed) for seed in args.seeds.split(",")]
        deadline = time.monotonic() + (parse_duration(args.stop_after) if args.stop_after else math.inf)
    except (ValueError, UsageError) as exc:
        print(f"supernet_search: {exc}", file=sys.stderr)
        return 2
    if any(m not in METHODS for m in methods):
        print(f"supernet_search: --methods takes {', '.join(METHODS)}", file=sys.stderr)
        return 2
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs = results.setdefault("runs", {})
    if args.redo:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        for key in [key for key in runs if key.startswith(args.redo + "/")]:
            results.setdefault("superseded", {})[key] = {**runs.pop(key), "redone_after": commit}

    def save() -> None:
        results["summary"] = summarise(runs)
        results["setup"] = {"search": " ".join(["nas.search", *TASK, "--target-flops 8M"]),
                            "methods": {m: " ".join(a) for m, a in METHODS.items()},
                            "flops": "multiply-accumulates of conv and linear layers at 32 px",
                            "retrain_seeds": ", ".join(map(str, RETRAIN_SEEDS))}
        write_json(args.out, {k: v for k, v in results.items() if k not in ("command", "date", "machine")})

    for seed in seeds:
        for budget in budgets:
            for method in methods:
                key = f"{method}/{budget}/{seed}"
                if key not in runs and time.monotonic() < deadline:
                    runs[key] = {**fresh_run(method, budget, seed), "reference": {}}
                    print(f"{key}: {runs[key]['candidates']} candidates, best reward {runs[key]['best_reward']}",
                          flush=True)
                    save()
                for reuse_key, fraction in REUSES.items():
                    if (method != "supernet" or key not in runs or reuse_key in runs[key] or args.no_reuse
                            or time.monotonic() >= deadline):
                        continue
                    reuse = reuse_run(budget, seed, fraction)
                    if reuse is None:
                        print(f"{key}: its stored supernet is gone, no reuse run", flush=True)
                        break
                    runs[key][reuse_key] = reuse
                    print(f"{key} reuse at 4M in {reuse['time_budget']}: {reuse['candidates']} candidates, "
                          f"{reuse['proxy_trained']} proxy-trained, in {reuse['seconds']:.0f} s", flush=True)
                    save()
    save()
    # Search seed by search seed, each method in turn: a session cut short leaves a figure for every method.
    order = {method: index for index, method in enumerate(METHODS)}
    from nas.search.study import arch_key
    from nas.space.spec import spec_from_dict

    def winner_key(run: dict[str, Any]) -> str:
        return arch_key(spec_from_dict(run["winner"]["arch"]))

    retrained = {(winner_key(run), seed): accuracy
                 for run in [*results.get("superseded", {}).values(), *runs.values()] if run["winner"]
                 for seed, accuracy in run["reference"].items()}
    # Runs whose winners share an architecture wait on one training: the same recipe and seed give the same network.
    waiting: dict[tuple[str, int], list[str]] = {}
    for key, run in runs.items():
        if run["winner"]:
            for seed in RETRAIN_SEEDS:
                known = retrained.get((winner_key(run), str(seed)))
                if known is not None:
                    run["reference"].setdefault(str(seed), known)
                elif str(seed) not in run["reference"]:
                    waiting.setdefault((winner_key(run), seed), []).append(key)
    save()
    todo = sorted(((keys[0], reference_seed, runs[keys[0]]["winner"]["arch"])
                   for (_, reference_seed), keys in waiting.items()),
                  key=lambda item: (item[1], int(item[0].split("/")[2]), order[item[0].split("/")[0]]))

    def trained(key: str, reference_seed: int, test_accuracy: float) -> None:
        for same in waiting[(winner_key(runs[key]), reference_seed)]:
            runs[same]["reference"][str(reference_seed)] = test_accuracy
        save()

    train_winners(todo, 1, deadline, trained)
    return 0


if __name__ == "__main__":
    sys.exit(main())
