"""An evaluation table: architectures drawn uniformly from the search space, each scored the way a search scores
it, for surrogate models and strategy benchmarks.

Run: .venv/bin/python bench/evaluation_table.py [--count 400] [--second-seed-every 4] [--stop-after 2h] [--commit]
                                               [--workers N] [--device-check K] [-- NAS.SEARCH OPTIONS]

Task: Fashion-MNIST at 8M FLOPs and 32 px (`nas.search --dataset fashion-mnist --resolution 32 --target-flops 8M`
with every other option at its default, the task of bench/final_training.py; options after `--` replace
these, and a table only grows with the options it was made with). Its configuration comes from
nas.search's own parser, and each entry from the search's own `Evaluator.evaluate`, so an entry equals what a
search would store for that architecture. Architectures are drawn uniformly, each dimension of each stage
independently; a draw over the search's FLOPs cap is counted (a search rejects it without training) and not
scored. Every entry holds the sample, the block strings, FLOPs at 32 px (multiply-accumulates of conv and linear
layers), params, the proxy accuracy and reward at seed 0, the three zero-cost scores and seconds (wall seconds of training
and validation: a run paused with SIGSTOP, or sharing the cores, inflates them; the accuracies do not change); every
`--second-seed-every`-th entry (the 1st, 5th, 9th, ...) is also scored with the proxy at seed 1, right after seed
0, so a table cut off part-way already has pairs for the proxy's seed-to-seed agreement. Results go to
bench/evaluation_table.json, one compact line per entry; a rerun restores entries from it and grows the table
(`--commit` commits it every ten entries, so a run can span sessions and machines).

`--workers N` scores N architectures at once, each in its own process with cores / N threads (on a GPU machine
they share the GPU: 14 workers on an H200 made 381 entries in 7.5 minutes); entries are still saved in draw
order. Each entry records its device (`cpu` or `cuda`), and `--device-check K` rescores, at seed 0 on this
device, the first K entries another device made (under `device_check`), to show that the two agree within the
proxy's seed-to-seed noise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench_json import current_commit, default_path, machine_description, relative

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from effnas.cli import parse_duration  # noqa: E402

SEARCH_ARGS = ["--dataset", "fashion-mnist", "--resolution", "32", "--target-flops", "8M"]
DRAW_SEED = 20261130


def setup(search_args: list[str], threads: int | None = None) -> tuple[Any, Any, Any]:
    """The search's configuration, space and evaluator for the task, built by nas.search's own code; `threads`
    replaces the task's CPU threads (as `nas.search --workers` divides the cores among its workers)."""
    from nas.evaluation.evaluator import Evaluator
    from nas.search.command import build_parser, config_from_args
    from nas.search.study import search_space
    from nas.training.data import load_task_data

    config = config_from_args(build_parser().parse_args(search_args))
    if threads is not None:
        config = replace(config, task=replace(config.task, threads=threads))
    data = load_task_data(config.task, config.proxy.resolution)
    return config, search_space(config, data.num_classes, data.in_channels), Evaluator(config.reward, config.proxy,
                                                                                        data)


def draws(space: Any, seed: int) -> Any:
    """Uniform samples of the space, forever, in one fixed order."""
    rng = random.Random(seed)
    choices = space.choices()
    while True:
        yield {label: rng.choice(values) for label, values in choices}


def score(space: Any, evaluator: Any, sample: dict[str, Any]) -> dict[str, Any]:
    from effnas.records import TrialStatus
    from nas.evaluation.config import ZERO_COST_SCORES
    from nas.evaluation.zero_cost import zero_cost_score

    spec = space.decode(sample)
    outcome = evaluator.evaluate(spec)
    if outcome.status is not TrialStatus.COMPLETE:
        raise RuntimeError(f"{outcome.status}: {outcome.error}")
    return {
        "sample": sample, "block_strings": " ".join(spec.canonical().block_strings()), "flops": outcome.flops,
        "params": outcome.params, "accuracy": {"0": outcome.accuracy}, "reward": outcome.reward,
        "seconds": outcome.train_seconds + outcome.eval_seconds, "device": evaluator.data.device.type,
        "zero_cost": {name: zero_cost_score(name, spec, evaluator.data) for name in ZERO_COST_SCORES},
    }


class Scorer:
    """Scores samples at seed 0 (a whole entry) or one proxy accuracy at another seed, in this process."""

    def __init__(self, search_args: list[str], threads: int | None = None) -> None:
        from nas.evaluation.evaluator import Evaluator

        self.config, self.space, self.evaluator = setup(search_args, threads)
        self.by_seed = {0: self.evaluator}
        self.evaluator_class = Evaluator

    def __call__(self, sample: dict[str, Any], seed: int | None) -> Any:
        """The entry for `sample` when `seed` is None, else its proxy accuracy at `seed`."""
        if seed is None:
            return score(self.space, self.evaluator, sample)
        if seed not in self.by_seed:
            self.by_seed[seed] = self.evaluator_class(self.config.reward, replace(self.config.proxy, seed=seed),
                                                      self.evaluator.data)
        return self.by_seed[seed].evaluate(self.space.decode(sample)).accuracy


_WORKER_SCORER: Scorer | None = None


def _start_worker(search_args: list[str], threads: int) -> None:
    global _WORKER_SCORER
    _WORKER_SCORER = Scorer(search_args, threads)


def _work(sample: dict[str, Any], seed: int | None) -> Any:
    assert _WORKER_SCORER is not None
    return _WORKER_SCORER(sample, seed)


class InProcess:
    """The executor for one worker: runs each job on submit, in this process, so a table made with
    `--workers 1` is made exactly as a search makes its trials."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def submit(self, sample: dict[str, Any], seed: int | None) -> Future:
        future: Future = Future()
        future.set_result(self.scorer(sample, seed))
        return future

    def shutdown(self) -> None:
        pass


class Pool:
    """The executor for several workers: spawned processes (CUDA needs spawn), each with its own data and
    evaluators, sharing the cores (and the GPU, where there is one)."""

    def __init__(self, search_args: list[str], workers: int) -> None:
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_worker, initargs=(search_args, threads))

    def submit(self, sample: dict[str, Any], seed: int | None) -> Future:
        return self.pool.submit(_work, sample, seed)

    def shutdown(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def write_compact(path: Path, table: dict[str, Any]) -> None:
    """The table as JSON with one line per entry (small, and a grown table diffs line by line), atomically."""
    head = ",\n".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in table.items() if key != "entries")
    entries = ",\n".join(json.dumps(entry, separators=(",", ":")) for entry in table["entries"])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(f"{{\n{head},\n\"entries\": [\n{entries}\n]}}\n")
    tmp.replace(path)


def commit(out: Path, message: str) -> None:
    subprocess.run(["git", "add", "--", str(out)], cwd=REPO, check=False)
    subprocess.run(["git", "commit", "-q", "-m", f"bench/evaluation_table: {message}", "--", str(out)], cwd=REPO,
                   check=False)


@dataclass
class Job:
    """One piece of work in flight: a new entry (`kind` "entry"), another seed of entry `index` ("seed"), or
    entry `index` at seed 0 again on this device ("recheck"). `drawn` and
    `over_cap` are the draw counters as they stood when it was drawn, saved once it lands, so a run cut off with
    work in flight resumes right after the last saved entry."""

    kind: str
    index: int
    seed: int | None
    future: Future
    drawn: int
    over_cap: int


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="scored architectures wanted (400)")
    parser.add_argument("--second-seed-every", type=int, default=4,
                        help="score every N-th entry at seed 1 too (4: 100 of 400)")
    parser.add_argument("--stop-after", help="start no new evaluation after this long, e.g. 2h")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes scoring at once (1: in this process); each gets cores / workers threads")
    parser.add_argument("--device-check", type=int, default=0, metavar="K",
                        help="also rescore the first K entries that another device made, at seed 0 on this one")
    parser.add_argument("--commit", action="store_true", help="git-commit the JSON every ten entries and at the end")
    parser.add_argument("--out", default=str(default_path(__file__)))
    parser.add_argument("search_args", nargs=argparse.REMAINDER, help="-- then nas.search options for the task")
    return parser.parse_args()


class TableRun:
    """One run growing the table at `out`: what it has drawn, what is in flight, and how each result lands."""

    def __init__(self, args: argparse.Namespace, search_args: list[str], table: dict[str, Any]) -> None:
        self.args, self.table, self.out = args, table, Path(args.out)
        self.search = " ".join(["nas.search", *search_args])
        self.limit = parse_duration(args.stop_after) if args.stop_after else None
        self.started = time.monotonic()
        self.scorer = Scorer(search_args, None if args.workers == 1 else 1)
        self.device = self.scorer.evaluator.data.device.type
        self.executor = InProcess(self.scorer) if args.workers == 1 else Pool(search_args, args.workers)
        self.in_flight = 1 if args.workers == 1 else 2 * args.workers
        self.machine = machine_description() + (f", {self.device}" if self.device != "cpu" else "")
        self.known = {self.key(e["sample"]) for e in table["entries"]}
        self.stream = draws(self.scorer.space, DRAW_SEED)
        for _ in range(table["drawn"]):
            next(self.stream)  # the draws earlier runs consumed
        self.drawn, self.over_cap = table["drawn"], table["over_cap"]
        self.jobs: deque[Job] = deque()
        self.check = table.setdefault("device_check", {}) if args.device_check else {}

    def key(self, sample: dict[str, Any]) -> str:
        from nas.search.study import arch_key

        return arch_key(self.scorer.space.decode(sample))

    def save(self) -> None:
        table, config = self.table, self.scorer.config
        machines = table.get("machines", [])
        machines = machines + [self.machine] * (self.machine not in machines)
        table.update(command=" ".join(["bench/evaluation_table.py", *(relative(a) if a.startswith("/") else a
                                                                      for a in sys.argv[1:])]),
                     date=time.strftime("%Y-%m-%d", time.gmtime()), machine=" and ".join(machines),
                     commit=current_commit(), machines=machines)
        table["setup"] = {"search": self.search, "proxy": config.proxy.__dict__,
                          "target_flops": config.reward.target_flops, "flops_limit": config.reward.cost_limit,
                          "flops": "multiply-accumulates of conv and linear layers at 32 px", "draw_seed": DRAW_SEED}
        write_compact(self.out, table)

    def out_of_time(self) -> bool:
        return self.limit is not None and time.monotonic() - self.started >= self.limit

    def submit(self, kind: str, index: int, sample: dict[str, Any], seed: int | None) -> None:
        self.jobs.append(Job(kind, index, seed, self.executor.submit(sample, seed), self.drawn, self.over_cap))

    def wants_second_seed(self, index: int, entry: dict[str, Any] | None) -> bool:
        return index % self.args.second_seed_every == 0 and (entry is None or "1" not in entry["accuracy"])

    def submit_unfinished(self) -> None:
        """Rechecks asked for on this device, and the seed-1 scores a cut-off run left undone."""
        entries = self.table["entries"]
        rechecks = [i for i, e in enumerate(entries) if e["device"] != self.device][:self.args.device_check]
        for index in rechecks:
            if str(index) not in self.check.get(self.device, {}):
                self.submit("recheck", index, entries[index]["sample"], 0)
        for index, entry in enumerate(entries):
            if self.wants_second_seed(index, entry):
                self.submit("seed", index, entry["sample"], 1)

    def submit_next_draw(self, index: int) -> bool:
        """Draw once; submit the draw as entry `index` unless it is over the cap or known. Whether it was."""
        sample = next(self.stream)
        self.drawn += 1
        evaluator = self.scorer.evaluator
        if evaluator.over_cap(evaluator.cost(self.scorer.space.decode(sample))[0]):
            self.over_cap += 1
            return False
        if self.key(sample) in self.known:
            return False
        self.known.add(self.key(sample))
        self.submit("entry", index, sample, None)
        if self.wants_second_seed(index, None):
            self.submit("seed", index, sample, 1)
        return True

    def record(self, job: Job, result: Any) -> None:
        entries = self.table["entries"]
        if job.kind == "entry":
            entries.append(result)
            self.table["drawn"], self.table["over_cap"] = job.drawn, job.over_cap
            print(f"{len(entries)}/{self.args.count}: proxy accuracy {result['accuracy']['0']:.4f}, "
                  f"{result['flops'] / 1e6:.1f}M FLOPs, {result['seconds']:.0f} s", flush=True)
            if self.args.commit and len(entries) % 10 == 0:
                self.save()
                commit(self.out, f"{len(entries)} entries")
        elif job.kind == "recheck":
            self.check.setdefault(self.device, {})[str(job.index)] = result
            print(f"  entry {job.index + 1} on {self.device}: {result:.4f} (seed 0 on {entries[job.index]['device']}: "
                  f"{entries[job.index]['accuracy']['0']:.4f})", flush=True)
        else:
            entry = entries[job.index]
            entry["accuracy"][str(job.seed)] = result
            print(f"  entry {job.index + 1} at seed {job.seed}: {result:.4f} (seed 0: {entry['accuracy']['0']:.4f})",
                  flush=True)
        self.save()

    def run(self) -> None:
        self.submit_unfinished()
        pending = len(self.table["entries"])  # entries scored or in flight
        count = self.args.count
        try:
            while self.jobs or (pending < count and not self.out_of_time()):
                while pending < count and len(self.jobs) < self.in_flight and not self.out_of_time():
                    pending += self.submit_next_draw(pending)
                job = self.jobs.popleft()
                self.record(job, job.future.result())
        finally:
            self.executor.shutdown()
        self.table["drawn"], self.table["over_cap"] = self.drawn, self.over_cap
        self.save()
        if self.args.commit:
            commit(self.out, f"{len(self.table['entries'])} entries")


def main() -> int:
    args = parse_arguments()
    if args.workers < 1 or args.count < 1 or args.second_seed_every < 1 or args.device_check < 0:
        print("evaluation_table: --workers, --count and --second-seed-every must be at least 1, --device-check "
              "at least 0", file=sys.stderr)
        return 2
    search_args = [arg for arg in args.search_args if arg != "--"] or SEARCH_ARGS
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.is_file() else {"entries": [], "over_cap": 0, "drawn": 0}
    search = " ".join(["nas.search", *search_args])
    if table.get("setup", {}).get("search", search) != search:
        print(f"evaluation_table: {out} was made with `{table['setup']['search']}`, not `{search}`", file=sys.stderr)
        return 2
    TableRun(args, search_args, table).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
