"""Does the search beat random sampling? Every strategy at the same trial budget, several seeds, two tasks.

Run: .venv/bin/python bench/search_efficacy.py [--trials 30] [--seeds 0,1,2] [--tasks mnist,fashion-mnist] [--jobs 2]
Each search is a real `python -m nas.search` run (1 thread, no EfficientNet-B0 reference, no time budget) into
bench/out/search_efficacy/<task>.db; a stopped bench continues where it was (finished searches are kept,
interrupted ones resumed). Per strategy, mean +- sd over seeds of:
- the best reward after every trial;
- the hypervolume of the (FLOPs, proxy accuracy) front after every trial, by pymoo's indicator, normalised to
  the box FLOPs in [0, 4 x target] x accuracy in [0, 1], reference point (4 x target FLOPs, accuracy 0);
- where each winner lands: its FLOPs / target;
- wall seconds per search (to compare prescreening, which adds scoring time, at equal wall time).
FLOPs are multiply-accumulates of conv and linear layers, at the task's resolution. Results go to
bench/search_efficacy.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_json import default_path, machine_description, write_json  # noqa: E402

from db import open_database  # noqa: E402
from db.searches import list_searches  # noqa: E402
from db.trials import trial_columns, trial_points  # noqa: E402
from effnas.records import SearchStatus, TrialRole, TrialStatus  # noqa: E402
from nas.evaluation.pareto import hypervolume_curve  # noqa: E402

HERE = Path(__file__).resolve().parent
TASKS = {
    "mnist": ["--target-flops", "400M"],
    "fashion-mnist": ["--dataset", "fashion-mnist", "--resolution", "32", "--target-flops", "8M"],
}
# name -> options of nas.search
STRATEGIES = {
    "random": ["--strategy", "random"],
    "evolution": ["--strategy", "evolution"],
    "tpe": ["--strategy", "tpe"],
    "reinforce": ["--strategy", "reinforce"],
    "evolution+prescreen8": ["--strategy", "evolution", "--prescreen", "8"],
}
MAX_FLOPS_RATIO = 4.0
# --proxy sgd: the proxy before bench/proxy_fidelity.py chose AdamW (what the committed results used).
PROXY_OPTIONS = {"default": [], "sgd": ["--optimizer", "sgd", "--batch-size", "128", "--lr", "0.05",
                                        "--weight-decay", "1e-5"]}


def run_search(task: str, strategy: str, seed: int, trials: int, folder: Path, proxy: str) -> str:
    db = folder / f"{task}.db"
    name = f"{strategy}-seed{seed}"
    existing = {}
    if db.exists():
        existing = {s.name: s for s in list_searches(open_database(f"sqlite:///{db}", create=False))}
    if name in existing and existing[name].status is SearchStatus.FINISHED:
        return f"{task} {name}: done before"
    if name in existing:
        args = ["--resume", str(existing[name].id), "--trials", str(trials)]
    else:
        args = [*TASKS[task], *STRATEGIES[strategy], *PROXY_OPTIONS[proxy], "--seed", str(seed), "--trials", str(trials), "--threads", "1",
                "--no-reference", "--time-budget", "none", "--name", name]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "nas.search", "--db", str(db), *args], capture_output=True,
                            text=True, env={**os.environ, "EFFNAS_DB": ""}, cwd=folder)
    if result.returncode != 0:
        raise SystemExit(f"{task} {name} failed:\n{result.stderr[-2000:]}")
    return f"{task} {name}: {time.perf_counter() - start:.0f} s"


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(task: str, folder: Path, trials: int) -> dict:
    db = open_database(f"sqlite:///{folder / f'{task}.db'}", create=False)
    per_strategy: dict[str, dict] = {}
    for search in list_searches(db):
        if search.status is not SearchStatus.FINISHED:
            continue
        strategy, _, seed = search.name.rpartition("-seed")
        points = [p for p in trial_points(db, [search.id]) if p.role is TrialRole.CANDIDATE][:trials]
        complete = [p.status is TrialStatus.COMPLETE for p in points]
        max_cost = MAX_FLOPS_RATIO * search.target_flops
        curve = hypervolume_curve([p.flops for p in points],
                                  [p.accuracy if ok else 0.0 for p, ok in zip(points, complete)], max_cost)
        best, best_curve, winner = 0.0, [], None
        for p, ok in zip(points, complete):
            if ok and p.reward > best:
                best, winner = p.reward, p
            best_curve.append(best)
        timings = trial_columns(db, search.id, ("role", "build_seconds", "train_seconds", "eval_seconds"))
        seconds = [sum(t[k] or 0.0 for k in ("build_seconds", "train_seconds", "eval_seconds"))
                   for t in timings if t["role"] == TrialRole.CANDIDATE.value][:trials]
        elapsed = list(accumulate(seconds))
        entry = per_strategy.setdefault(strategy, {"seeds": []})
        entry["seeds"].append({
            "seed": int(seed), "search_id": search.id, "trials": len(points), "best_reward": best,
            "wall_seconds": (search.finished_at - search.started_at).total_seconds()
            if search.finished_at and search.started_at else None,
            "best_accuracy": winner.accuracy if winner else None,
            "winner_flops_over_target": winner.flops / search.target_flops if winner else None,
            "hypervolume": curve[-1] if curve else 0.0, "hypervolume_by_trial": curve,
            "best_reward_by_trial": best_curve, "trial_seconds_elapsed": elapsed,
            "median_accuracy": statistics.median(p.accuracy for p, ok in zip(points, complete) if ok),
        })
    # Strategies differ in the size, and so the cost, of what they propose: compare them also at equal time, the
    # training seconds of the cheapest search (what a time budget buys, with the machine's noise in it).
    equal_time = min((s["trial_seconds_elapsed"][-1] for e in per_strategy.values() for s in e["seeds"]), default=0.0)
    for entry in per_strategy.values():
        # Searches run again get new ids: order by seed so that lists read the same from run to run.
        seeds = entry["seeds"] = sorted(entry["seeds"], key=lambda s: s["seed"])
        at_equal_time = [max([b for b, t in zip(s["best_reward_by_trial"], s["trial_seconds_elapsed"])
                              if t <= equal_time], default=0.0) for s in seeds]
        entry["best_reward_at_equal_time"] = {"training_seconds": equal_time, **_mean_sd(at_equal_time)}
        entry["best_reward"] = _mean_sd([s["best_reward"] for s in seeds])
        entry["hypervolume"] = _mean_sd([s["hypervolume"] for s in seeds])
        entry["winner_flops_over_target"] = [s["winner_flops_over_target"] for s in seeds]
        entry["wall_seconds"] = _mean_sd([s["wall_seconds"] or 0.0 for s in seeds])
        length = min(len(s["hypervolume_by_trial"]) for s in seeds)
        entry["hypervolume_by_trial_mean"] = [statistics.fmean(s["hypervolume_by_trial"][i] for s in seeds)
                                              for i in range(length)]
    return per_strategy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials per search (30)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds (0,1,2)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"tasks ({','.join(TASKS)})")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"strategies ({','.join(STRATEGIES)})")
    parser.add_argument("--jobs", type=int, default=2, help="searches at once, 1 thread each (2)")
    parser.add_argument("--proxy", choices=PROXY_OPTIONS, default="default", help="proxy of new searches (default)")
    parser.add_argument("--report", action="store_true", help="only summarise the searches already finished")
    parser.add_argument("--out", default=str(default_path(__file__)))
    args = parser.parse_args()
    folder = HERE / "out" / "search_efficacy"
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks, strategies = args.tasks.split(","), args.strategies.split(",")
    runs = [] if args.report else [(task, strategy, seed) for task in tasks for seed in seeds for strategy in strategies]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        for index, line in enumerate(pool.map(lambda r: run_search(*r, args.trials, folder, args.proxy), runs)):
            print(f"[{index + 1}/{len(runs)}, {time.perf_counter() - started:.0f} s] {line}", flush=True)
    results = {
        "setup": {
            "trials": args.trials, "seeds": seeds, "tasks": {t: " ".join(TASKS[t]) for t in tasks},
            "strategies": {s: " ".join(STRATEGIES[s]) for s in strategies},
            "search": f"python -m nas.search with the {args.proxy} proxy, --threads 1 --no-reference --time-budget none",
            "hypervolume": "pymoo HV of (FLOPs / (4 x target), 1 - proxy accuracy) with reference point (1, 1): the "
                           "share of the box FLOPs in [0, 4 x target] x accuracy in [0, 1] that the front dominates",
            "flops": "multiply-accumulates of conv and linear layers; mnist at 224 px, fashion-mnist at 32 px",
            "machine": f"{machine_description()}, {args.jobs} searches at once",
        },
        "tasks": {task: summarise(task, folder, args.trials) for task in tasks},
    }
    write_json(args.out, results)
    for task, per_strategy in results["tasks"].items():
        print(f"\n{task} ({args.trials} trials, seeds {args.seeds})")
        equal_time = next(iter(per_strategy.values()))["best_reward_at_equal_time"]["training_seconds"]
        print(f"{'strategy':24}{'best reward':>18}{'hypervolume':>18}{f'best at {equal_time:.0f} s':>20}"
              f"{'wall s':>8}  winner FLOPs/target")
        for name, entry in per_strategy.items():
            best, hv, timed = entry["best_reward"], entry["hypervolume"], entry["best_reward_at_equal_time"]
            ratios = ", ".join(f"{r:.2f}" for r in entry["winner_flops_over_target"] if r is not None)
            print(f"{name:24}{best['mean']:>10.4f} ± {best['sd']:.4f}{hv['mean']:>10.4f} ± {hv['sd']:.4f}"
                  f"{timed['mean']:>12.4f} ± {timed['sd']:.4f}{entry['wall_seconds']['mean']:>8.0f}  {ratios}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
