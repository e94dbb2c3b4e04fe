"""Strategies compared on the surrogate: many evaluations and seeds at the cost of milliseconds per evaluation.

Run: .venv/bin/python bench/search_surrogate.py [--seeds 50] [--evaluations 150] [--strategies random,...]
                                               [--surrogate-scores none] [--workers 2]
                                               [--table bench/evaluation_table.json] [--stop-after 2h] [--commit]

Every strategy runs through nas.search's own code (`run_study`: the strategy, NNI's engine, the study, the
database) with the task the table was made for (by default Fashion-MNIST, 8M FLOPs target at 32 px; no EfficientNet-B0
reference, no time budget), except that a `SurrogateEvaluator` answers instead of proxy training: the surrogate
fitted on the evaluation table plus Gaussian noise at the table's seed-to-seed level. Its features are the
architecture and `--surrogate-scores` (default none), its model the one bench/surrogate_fit.py measured best with
those scores (else extra trees). Training-free scores make a closer surrogate (grad_norm: held-out tau 0.65
against 0.55) but cost 0.7 s per evaluation on a CPU thread, 7 hours for 5 strategies x 50 seeds x 150
evaluations, against milliseconds without. Trials are stored as a real search stores them, one database per
run in bench/out/search_surrogate/. `--workers N` runs N searches at once, each in its own process with one
thread. FLOPs are multiply-accumulates of conv and linear layers at 32 px.

Per strategy and seed it keeps each evaluation's reward as the search saw it (noisy) and the surrogate's
noise-free reward of the search's best trial so far (what the network it would hand over is worth), and the
hypervolume of the (FLOPs, accuracy) front. The summary gives, per strategy, the median and interquartile range
over seeds after each evaluation, the evaluations its median needs to reach random's median best at the last
evaluation, and the one-sided Mann-Whitney p-value of its final values against random's over seeds. Results:
bench/search_surrogate.json.gz (gzipped: every run's curves) and .png; a rerun restores finished (strategy, seed) runs from the JSON, so the bench
spans sessions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from bench_json import default_path, read_json, write_json
from scipy.stats import mannwhitneyu

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from effnas.cli import parse_duration  # noqa: E402

STRATEGIES = ("random", "evolution", "tpe", "reinforce", "predictor")
FOLDER = HERE / "out" / "search_surrogate"


def usage_error(message: str) -> int:
    print(f"search_surrogate: {message}", file=sys.stderr)
    return 2


def surrogate_model(fit_path: Path, scores: str) -> str:
    """The model bench/surrogate_fit.py measured best with the training-free scores `scores`."""
    if not fit_path.is_file():
        return "extra-trees"
    return json.loads(fit_path.read_text()).get("best_per_zero_cost", {}).get(scores, "extra-trees")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from nas.search.command import build_parser, config_from_args
        from nas.search.strategies import route_nni_logs
        from nas.search.study import search_space
        from nas.search.surrogate import Surrogate, load_table, seed_noise, table_search_args
        from nas.training.data import load_task_data

        self.args = args
        route_nni_logs(FOLDER / "nni.log", False)
        self.search_args = table_search_args(args.table)
        # One thread: the surrogate's work (zero-cost scores, tree ensembles) is small, and multi-threaded PyTorch
        # beside other work on the cores slows down several-fold.
        config = config_from_args(build_parser().parse_args([*self.search_args, "--threads", "1"]))
        self.data = load_task_data(config.task, config.proxy.resolution)
        space = search_space(config, self.data.num_classes, self.data.in_channels)
        entries = load_table(args.table, space)
        self.noise = seed_noise(entries)
        from surrogate_fit import SCORE_SETS

        self.model, self.scores = surrogate_model(HERE / "surrogate_fit.json", args.surrogate_scores), SCORE_SETS[
            args.surrogate_scores]
        self.surrogate = Surrogate(entries, space, self.model, self.scores)
        self.entries = len(entries)
        self.max_flops = config.reward.cost_limit
        # The table's own training-free scores, and those computed here, by architecture: a score is a function
        # of the untrained network, so no architecture is scored twice across strategies and seeds.
        from nas.search.study import arch_key

        self.zero_cost = {arch_key(space.decode(entry.sample)): entry.zero_cost for entry in entries}
        self.out = Path(args.out)
        self.results: dict[str, Any] = read_json(self.out) if self.out.is_file() else {}
        self.results.setdefault("runs", {})

    def score(self, spec: Any, name: str) -> float:
        from nas.evaluation.zero_cost import zero_cost_score
        from nas.search.study import arch_key

        scores = self.zero_cost.setdefault(arch_key(spec), {})
        if name not in scores:
            scores[name] = zero_cost_score(name, spec, self.data)
        return scores[name]

    def run(self, strategy: str, seed: int) -> dict[str, Any]:
        """One search on the surrogate; its evaluations as the search stored them."""
        from db import open_database, trials
        from effnas.records import TrialRole, TrialStatus
        from nas.evaluation.reward import reward
        from nas.search.command import build_parser, config_from_args, run_study
        from nas.search.study import Study, create_search
        from nas.search.surrogate import SurrogateEvaluator

        config = config_from_args(build_parser().parse_args([
            *self.search_args, "--strategy", strategy, "--seed", str(seed), "--trials", str(self.args.evaluations),
            "--time-budget", "none", "--no-reference", "--threads", "1",
        ]))
        FOLDER.mkdir(parents=True, exist_ok=True)
        db = open_database(f"sqlite:///{FOLDER / f'{strategy}-seed{seed}.db'}")
        search_id = create_search(db, config, f"surrogate-{strategy}-seed{seed}")
        evaluator = SurrogateEvaluator(self.surrogate, config.reward, config.proxy, self.data, self.noise, seed,
                                       self.score)
        study = Study(db, search_id, config, evaluator)
        started = time.perf_counter()
        ended: BaseException | None = None
        try:
            run_study(study)
        except BaseException as exc:
            ended = exc
        study.end(ended)
        if ended is not None:
            raise ended
        rows = [row for row in trials.list_trials(db, search_id) if row.role is TrialRole.CANDIDATE]
        target = config.reward.target_flops

        def true_reward(row: Any) -> float:
            mean = evaluator.predicted[row.arch_key]
            return reward(mean, row.flops, target, config.reward.constraint, config.reward.w)

        complete = [row.status is TrialStatus.COMPLETE for row in rows]
        return {
            "search_id": search_id, "seconds": round(time.perf_counter() - started, 1),
            "flops": [row.flops for row in rows],
            "accuracy": [round(row.accuracy, 5) if ok else 0.0 for row, ok in zip(rows, complete)],
            "reward": [round(row.reward, 5) if ok else 0.0 for row, ok in zip(rows, complete)],
            "true_reward": [round(true_reward(row), 5) if ok else 0.0 for row, ok in zip(rows, complete)],
        }

    def save(self, message: str) -> None:
        self.results["setup"] = {
            "search": " ".join(["nas.search", *self.search_args, "--no-reference", "--time-budget", "none",
                                "--threads", "1"]),
            "table": self.args.table, "table_entries": self.entries, "surrogate": self.model,
            "zero_cost_features": list(self.scores), "noise_sd": self.noise, "evaluations": self.args.evaluations,
            "flops": "multiply-accumulates of conv and linear layers at the task's resolution",
        }
        self.results["summary"] = summarise(self.results["runs"], self.args.evaluations, self.max_flops)
        write_json(self.out, {k: v for k, v in self.results.items() if k not in ("command", "date", "machine")})
        plot(self.results["summary"], self.results["setup"]["search"], Path(str(self.out).removesuffix(".gz")).with_suffix(".png"))
        if self.args.commit:
            files = [str(self.out), str(Path(str(self.out).removesuffix(".gz")).with_suffix(".png"))]
            subprocess.run(["git", "add", "--", *files], cwd=REPO, check=False)
            subprocess.run(["git", "commit", "-q", "-m", f"bench/search_surrogate: {message}", "--", *files],
                           cwd=REPO, check=False)


def quartiles(curves: list[list[float]]) -> dict[str, list[float]]:
    """Median and interquartile range over seeds, after each evaluation."""
    bands: dict[str, list[float]] = {"median": [], "q25": [], "q75": []}
    for values in zip(*curves):
        q25, median, q75 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
        for name, value in zip(("q25", "median", "q75"), (q25, median, q75)):
            bands[name].append(round(value, 5))
    return bands


def best_so_far(values: list[float]) -> list[float]:
    return list(itertools.accumulate(values, max))


def incumbent_value(seen: list[float], worth: list[float]) -> list[float]:
    """After each evaluation, the worth of the trial with the best reward seen so far (the one the search hands
    over)."""
    out, best = [], 0
    for index, value in enumerate(seen):
        best = index if value > seen[best] else best
        out.append(worth[best])
    return out


def evaluations_to_reach(curve: list[float], level: float) -> int | None:
    return next((index + 1 for index, value in enumerate(curve) if value >= level), None)


def summarise(runs: dict[str, dict[str, Any]], evaluations: int, max_flops: float) -> dict[str, Any]:
    from nas.evaluation.pareto import hypervolume_curve

    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for key, run in runs.items():
        by_strategy.setdefault(key.split("/")[0], []).append(run)
    summary: dict[str, Any] = {}
    finals: dict[str, dict[str, list[float]]] = {}
    for strategy, group in by_strategy.items():
        group = [run for run in group if len(run["reward"]) >= evaluations]
        curves = {
            "best_reward": [best_so_far(run["reward"][:evaluations]) for run in group],
            "handed_over_true_reward": [incumbent_value(run["reward"][:evaluations], run["true_reward"][:evaluations])
                                        for run in group],
            "hypervolume": [hypervolume_curve(run["flops"][:evaluations], run["accuracy"][:evaluations], max_flops)
                            for run in group],
        }
        finals[strategy] = {metric: [curve[-1] for curve in per_seed] for metric, per_seed in curves.items()}
        summary[strategy] = {"seeds": len(group), **{metric: quartiles(per_seed) for metric, per_seed in curves.items()},
                             "seconds_per_search": statistics.fmean(run["seconds"] for run in group)}
    if "random" in summary:
        for metric in finals["random"]:
            level = summary["random"][metric]["median"][-1]
            for entry in summary.values():
                entry.setdefault("evaluations_to_random_median_at_end", {})[metric] = evaluations_to_reach(
                    entry[metric]["median"], level)
        for strategy, entry in summary.items():
            if strategy != "random" and entry["seeds"] > 1 and summary["random"]["seeds"] > 1:
                entry["p_value_against_random_at_end"] = {
                    metric: float(mannwhitneyu(values, finals["random"][metric], alternative="greater").pvalue)
                    for metric, values in finals[strategy].items()}
    return summary


def plot(summary: dict[str, Any], task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = {"best_reward": "best reward seen (noisy, as the search saw it)",
               "handed_over_true_reward": "noise-free reward of the network handed over",
               "hypervolume": "hypervolume of the (FLOPs, accuracy) front"}
    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5))
    for axis, (metric, title) in zip(axes, metrics.items()):
        for strategy, entry in summary.items():
            band = entry[metric]
            steps = range(1, len(band["median"]) + 1)
            line, = axis.plot(steps, band["median"], label=f"{strategy} ({entry['seeds']} seeds)")
            axis.fill_between(steps, band["q25"], band["q75"], color=line.get_color(), alpha=0.15)
        # From the worst lower quartile after 10 evaluations: the first few would flatten every difference.
        axis.set_ylim(bottom=min(entry[metric]["q25"][min(9, len(entry[metric]["q25"]) - 1)]
                                 for entry in summary.values()))
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("evaluations")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Strategies on the surrogate of `{task}` (FLOPs: multiply-accumulates; median and "
                    "interquartile band over seeds)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


_WORKER_BENCH: Bench | None = None


def _start_worker(args: argparse.Namespace) -> None:
    global _WORKER_BENCH
    _WORKER_BENCH = Bench(args)


def _run(strategy: str, seed: int) -> dict[str, Any]:
    assert _WORKER_BENCH is not None
    return _WORKER_BENCH.run(strategy, seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50, help="seeds per strategy, 0..N-1 (50)")
    parser.add_argument("--evaluations", type=int, default=150, help="trials per search (150)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--surrogate-scores", default="none",
                        help="training-free scores among the surrogate's features: none, naswot, grad_norm or "
                             "'all three' (none)")
    parser.add_argument("--workers", type=int, default=1, help="searches at once, each in its own process (1)")
    parser.add_argument("--table", default=str(HERE / "evaluation_table.json"), help="the surrogate's table")
    parser.add_argument("--stop-after", help="start no new search after this long, e.g. 2h")
    parser.add_argument("--commit", action="store_true", help="git-commit the JSON and PNG every 10 searches")
    parser.add_argument("--out", default=str(default_path(__file__, ".json.gz")))
    return parser


def run_in_pool(args: argparse.Namespace, todo: list[tuple[str, int]],
                done: Callable[[str, int, dict[str, Any]], None], out_of_time: Callable[[], bool]) -> None:
    """The searches of `todo`, `args.workers` at a time in spawned processes, none started once out of time."""
    pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(args,))
    waiting = iter(todo)
    running: dict[Future, tuple[str, int]] = {}
    try:
        while True:
            while len(running) < args.workers and not out_of_time():
                job = next(waiting, None)
                if job is None:
                    break
                running[pool.submit(_run, *job)] = job
            if not running:
                break
            finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished_now:
                done(*running.pop(future), future.result())
    finally:
        pool.shutdown(cancel_futures=True)


def main() -> int:
    args = build_parser().parse_args()
    from surrogate_fit import SCORE_SETS

    from effnas.cli import UsageError
    from nas.search.config import STRATEGIES as KNOWN
    from nas.search.surrogate import TableError
    from nas.training.config import DataError

    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = [name for name in strategies if name not in KNOWN]
    if unknown:
        return usage_error(f"unknown strategy {unknown[0]!r}; choose among {', '.join(KNOWN)}")
    if args.surrogate_scores not in SCORE_SETS:
        return usage_error(f"unknown --surrogate-scores {args.surrogate_scores!r}; choose among "
                           f"{', '.join(SCORE_SETS)}")
    if args.seeds < 1 or args.evaluations < 2 or args.workers < 1:
        return usage_error("--seeds and --workers must be at least 1 and --evaluations at least 2")
    try:
        limit = parse_duration(args.stop_after) if args.stop_after else math.inf
        bench = Bench(args)
    except (TableError, UsageError, DataError, ValueError) as exc:
        return usage_error(str(exc))
    made = bench.results.get("setup", {}).get("zero_cost_features")
    if bench.results["runs"] and made is not None and made != list(bench.scores):
        return usage_error(f"{args.out} holds searches on a surrogate with scores {made or 'none'}; pass the same "
                           "--surrogate-scores or another --out")
    started = time.monotonic()
    todo = [(strategy, seed) for seed in range(args.seeds) for strategy in strategies
            if f"{strategy}/{seed}" not in bench.results["runs"]]
    finished = 0

    def done(strategy: str, seed: int, run: dict[str, Any]) -> None:
        nonlocal finished
        bench.results["runs"][f"{strategy}/{seed}"] = run
        finished += 1
        print(f"{strategy}/{seed}: best reward {max(run['reward']):.4f} (noise-free {max(run['true_reward']):.4f}), "
              f"{run['seconds']:.0f} s; {len(bench.results['runs'])} searches done", flush=True)
        if finished % 10 == 0:
            bench.save(f"{len(bench.results['runs'])} searches")

    def out_of_time() -> bool:
        return time.monotonic() - started >= limit

    if args.workers == 1:
        for strategy, seed in todo:
            if out_of_time():
                break
            done(strategy, seed, bench.run(strategy, seed))
    else:
        run_in_pool(args, todo, done, out_of_time)
    bench.save(f"{len(bench.results['runs'])} searches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
