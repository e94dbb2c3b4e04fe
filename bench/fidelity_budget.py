"""How many distinct candidates the default run evaluates in its 9-minute budget, and how good its winner is, with
and without successive halving.

Run: .venv/bin/python bench/fidelity_budget.py [--seeds 0,1] [--commit]

Each run is the README's default search `python -m nas.search --target-flops 400M` (embedded MNIST, 9-minute
budget, EfficientNet-B0 reference included, every other option at its default) with every candidate proxy-trained
(`--evaluator proxy`, which halving implies) and `--seed S`, and once more with `--fidelity halving`, into
bench/out/fidelity_budget.db. Per run: candidates evaluated (distinct architectures, the EfficientNet-B0 reference
not counted), how many trained the full proxy, and the winner's reward and proxy accuracy (the winner is always a
full-proxy candidate). FLOPs are multiply-accumulates of conv and linear layers at 224 px. The budget is wall time,
so the counts belong to this machine and need it idle: run nothing beside it. A rerun keeps the runs already in
bench/fidelity_budget.json that were measured with today's default strategy, and measures the others again. Budget:
2 x 9.5 minutes per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_json import default_path, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

DEFAULT_RUN = ["--target-flops", "400M"]
MODES = {"full": ["--evaluator", "proxy"], "halving": ["--fidelity", "halving"]}
DB = HERE / "out" / "fidelity_budget.db"


def default_strategy() -> str:
    from nas.search.config import SearchConfig

    return SearchConfig.strategy


def measure(mode: str, seed: int) -> dict[str, Any]:
    from db import open_database, searches, trials
    from effnas.records import TrialRole, TrialStatus

    name = f"{mode}-seed{seed}"
    DB.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "nas.search", *DEFAULT_RUN, *MODES[mode], "--seed", str(seed), "--name", name,
               "--db", str(DB)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip().splitlines()[-1]}")
    db = open_database(f"sqlite:///{DB}", create=False)
    search = max((row for row in searches.list_searches(db) if row.name == name), key=lambda row: row.id)
    rows = [row for row in trials.list_trials(db, search.id) if row.role is TrialRole.CANDIDATE]
    complete = [row for row in rows if row.status is TrialStatus.COMPLETE]
    winner = trials.best_trial(db, search.id)
    return {
        "search_id": search.id, "candidates": len(rows), "complete": len(complete),
        "full_proxy": sum(not row.partial for row in complete),
        "stopped_after_first_epoch": sum(row.partial for row in complete),
        "rejected": sum(row.status is TrialStatus.REJECTED for row in rows),
        "best_reward": winner.reward, "best_accuracy": winner.accuracy, "best_flops": winner.flops,
        "best_block_strings": winner.block_strings,
    }


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    summary = {}
    for mode in MODES:
        group = [run for key, run in runs.items() if key.startswith(f"{mode}/")]
        if not group:
            continue
        entry: dict[str, Any] = {"seeds": len(group)}
        for metric in ("candidates", "full_proxy", "best_reward"):
            values = [run[metric] for run in group]
            entry[metric] = {"mean": statistics.fmean(values),
                             "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
        summary[mode] = entry
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (0,1)")
    parser.add_argument("--commit", action="store_true", help="git-commit the JSON after each run")
    parser.add_argument("--out", default=str(default_path(__file__)))
    args = parser.parse_args()
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        print(f"fidelity_budget: --seeds takes whole numbers separated by commas, got {args.seeds!r}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    runs = results.setdefault("runs", {})
    for seed in seeds:
        for mode in MODES:
            key = f"{mode}/{seed}"
            # A run measured under an earlier default strategy measures a search the default run no longer is.
            if runs.get(key, {}).get("strategy") == default_strategy():
                continue
            runs[key] = {**measure(mode, seed), "strategy": default_strategy()}
            print(f"{key}: {runs[key]['candidates']} candidates, {runs[key]['full_proxy']} on the full proxy, "
                  f"best reward {runs[key]['best_reward']:.4f}", flush=True)
            results["summary"] = summarise(runs)
            results["setup"] = {
                "search": " ".join(["nas.search", *DEFAULT_RUN]), "strategy": default_strategy(), "modes": MODES,
                "flops": "multiply-accumulates of conv and linear layers at 224 px",
                "note": "a 9-minute wall-time budget: counts belong to this machine, idle",
            }
            write_json(out, {k: v for k, v in results.items() if k not in ("command", "date", "machine")})
            if args.commit:
                subprocess.run(["git", "add", "--", str(out)], cwd=REPO, check=False)
                subprocess.run(["git", "commit", "-q", "-m", f"bench/fidelity_budget: {key}", "--", str(out)],
                               cwd=REPO, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
