"""Are the surrogate benchmark's winners really good? Each strategy's most frequent handed-over networks, trained
with the real proxy.

Run: .venv/bin/python bench/surrogate_winners.py [--per-strategy 3] [--strategies tpe,reinforce,evolution,random]

A search on the surrogate can climb to where the surrogate is wrong, above all where the evaluation table has no
entries (uniform draws never land below 5M FLOPs at the 8M target). For each strategy, the networks that
bench/search_surrogate.py's searches hand over most often (their databases under bench/out/search_surrogate/)
are scored by the search's own `Evaluator` at seed 0, exactly as a real search or the table would, beside the
accuracy the surrogate search saw. FLOPs are multiply-accumulates of conv and linear layers at 32 px. Budget: about
a minute per network on 2 cores. Results: bench/surrogate_winners.json (a rerun restores networks already trained).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench_json import default_path, write_json
from evaluation_table import SEARCH_ARGS, Scorer
from search_surrogate import FOLDER


def winners(strategy: str, count: int) -> list[tuple[int, Any]]:
    """The `count` networks the strategy's searches hand over most often, with how many searches did."""
    from db import open_database, trials

    times: Counter[str] = Counter()
    rows: dict[str, Any] = {}
    for path in sorted(FOLDER.glob(f"{strategy}-seed*.db")):
        best = trials.best_trial(open_database(f"sqlite:///{path}", create=False), 1)
        if best is not None:
            times[best.arch_key] += 1
            rows[best.arch_key] = best
    return [(n, rows[key]) for key, n in times.most_common(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-strategy", type=int, default=3, help="networks per strategy (3)")
    parser.add_argument("--strategies", default="tpe,reinforce,evolution,random")
    parser.add_argument("--out", default=str(default_path(__file__)))
    args = parser.parse_args()
    if args.per_strategy < 1:
        print("surrogate_winners: --per-strategy must be at least 1", file=sys.stderr)
        return 2
    from nas.space.spec import spec_from_dict

    out = Path(args.out)
    done = {row["arch_key"]: row for row in json.loads(out.read_text())["networks"]} if out.is_file() else {}
    scorer = Scorer(SEARCH_ARGS, 1)
    networks = []
    for strategy in [name for name in args.strategies.split(",") if name]:
        for searches, row in winners(strategy, args.per_strategy):
            if row.arch_key not in done:
                outcome = scorer.evaluator.evaluate(spec_from_dict(row.arch))
                done[row.arch_key] = {"arch_key": row.arch_key, "block_strings": row.block_strings,
                                      "flops": row.flops, "proxy_accuracy": outcome.accuracy,
                                      "proxy_reward": outcome.reward}
            network = {**done[row.arch_key], "strategy": strategy, "searches": searches,
                       "accuracy_seen_on_surrogate": row.accuracy, "reward_seen_on_surrogate": row.reward}
            networks.append(network)
            print(f"{strategy}: handed over by {searches} searches, {row.flops / 1e6:.1f}M FLOPs: surrogate "
                  f"{row.accuracy:.3f}, real proxy {network['proxy_accuracy']:.3f} (reward "
                  f"{network['proxy_reward']:.3f})", flush=True)
    table_best = max(entry["reward"] for entry in json.loads((Path(__file__).parent / "evaluation_table.json")
                                                             .read_text())["entries"])
    write_json(out, {"task": " ".join(["nas.search", *SEARCH_ARGS]), "proxy_seed": 0,
                     "flops": "multiply-accumulates of conv and linear layers at 32 px",
                     "best_reward_in_evaluation_table": table_best, "networks": networks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
