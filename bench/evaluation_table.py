"""An evaluation table: architectures drawn uniformly from the search space, each scored the way a search scores
it, for surrogate models and strategy benchmarks.

Run: .venv/bin/python bench/evaluation_table.py [--count 400] [--second-seed-every 4] [--stop-after 2h] [--commit]
                                               [-- NAS.SEARCH OPTIONS]

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
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_json import default_path, machine_description

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from effnas.cli import parse_duration  # noqa: E402

SEARCH_ARGS = ["--dataset", "fashion-mnist", "--resolution", "32", "--target-flops", "8M"]
DRAW_SEED = 20261130


def setup(search_args: list[str]) -> tuple[Any, Any, Any]:
    """The search's configuration, space and evaluator for the task, built by nas.search's own code."""
    from nas.evaluation.evaluator import Evaluator
    from nas.search.command import build_parser, config_from_args
    from nas.search.study import search_space
    from nas.training.data import load_task_data

    config = config_from_args(build_parser().parse_args(search_args))
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
    from db.states import TrialStatus
    from nas.evaluation.config import ZERO_COST_SCORES
    from nas.evaluation.zero_cost import zero_cost_score

    spec = space.decode(sample)
    outcome = evaluator.evaluate(spec)
    if outcome.status is not TrialStatus.COMPLETE:
        raise RuntimeError(f"{outcome.status}: {outcome.error}")
    return {
        "sample": sample, "block_strings": " ".join(spec.canonical().block_strings()), "flops": outcome.flops,
        "params": outcome.params, "accuracy": {"0": outcome.accuracy}, "reward": outcome.reward,
        "seconds": outcome.train_seconds + outcome.eval_seconds,
        "zero_cost": {name: zero_cost_score(name, spec, evaluator.data) for name in ZERO_COST_SCORES},
    }


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="scored architectures wanted (400)")
    parser.add_argument("--second-seed-every", type=int, default=4,
                        help="score every N-th entry at seed 1 too (4: 100 of 400)")
    parser.add_argument("--stop-after", help="start no new evaluation after this long, e.g. 2h")
    parser.add_argument("--commit", action="store_true", help="git-commit the JSON every ten entries and at the end")
    parser.add_argument("--out", default=str(default_path(__file__)))
    parser.add_argument("search_args", nargs=argparse.REMAINDER, help="-- then nas.search options for the task")
    args = parser.parse_args()
    search_args = [arg for arg in args.search_args if arg != "--"] or SEARCH_ARGS
    limit = parse_duration(args.stop_after) if args.stop_after else None
    started = time.monotonic()
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.is_file() else {"entries": [], "over_cap": 0, "drawn": 0}
    search = " ".join(["nas.search", *search_args])
    if table.get("setup", {}).get("search", search) != search:
        print(f"evaluation_table: {out} was made with `{table['setup']['search']}`, not `{search}`", file=sys.stderr)
        return 2
    config, space, evaluator = setup(search_args)
    from nas.evaluation.evaluator import Evaluator
    from nas.search.study import arch_key

    second = Evaluator(config.reward, replace(config.proxy, seed=1), evaluator.data)
    known = {arch_key(space.decode(e["sample"])) for e in table["entries"]}
    stream = draws(space, DRAW_SEED)
    for _ in range(table["drawn"]):
        next(stream)  # the draws earlier runs consumed

    def save() -> None:
        table.update(command=" ".join(["bench/evaluation_table.py", *sys.argv[1:]]),
                     date=time.strftime("%Y-%m-%d", time.gmtime()), machine=machine_description())
        table["setup"] = {"search": search, "proxy": config.proxy.__dict__,
                          "target_flops": config.reward.target_flops, "flops_limit": config.reward.flops_limit,
                          "flops": "multiply-accumulates of conv and linear layers at 32 px", "draw_seed": DRAW_SEED}
        write_compact(out, table)

    def out_of_time() -> bool:
        return limit is not None and time.monotonic() - started >= limit

    def second_seed(index: int, entry: dict[str, Any]) -> None:
        if index % args.second_seed_every or "1" in entry["accuracy"] or out_of_time():
            return
        entry["accuracy"]["1"] = second.evaluate(space.decode(entry["sample"])).accuracy
        print(f"  seed 1: {entry['accuracy']['1']:.4f} (seed 0: {entry['accuracy']['0']:.4f})", flush=True)
        save()

    for index, entry in enumerate(table["entries"]):
        second_seed(index, entry)  # pairs a cut-off run left unscored
    while len(table["entries"]) < args.count and not out_of_time():
        sample = next(stream)
        table["drawn"] += 1
        spec = space.decode(sample)
        flops, _ = evaluator.cost(spec)
        if evaluator.over_cap(flops):
            table["over_cap"] += 1
            continue
        if arch_key(spec) in known:
            continue
        entry = score(space, evaluator, sample)
        known.add(arch_key(spec))
        table["entries"].append(entry)
        print(f"{len(table['entries'])}/{args.count}: proxy accuracy {entry['accuracy']['0']:.4f}, "
              f"{entry['flops'] / 1e6:.1f}M FLOPs, {entry['seconds']:.0f} s", flush=True)
        save()
        second_seed(len(table["entries"]) - 1, entry)
        if args.commit and len(table["entries"]) % 10 == 0:
            commit(out, f"{len(table['entries'])} entries")
    save()
    if args.commit:
        commit(out, f"{len(table['entries'])} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
