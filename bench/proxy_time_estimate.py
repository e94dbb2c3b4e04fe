"""How close is the estimate a supernet search keeps its time back by to the proxy training it estimates?

Run: .venv/bin/python bench/proxy_time_estimate.py [--count 6]

A supernet search, near its end, keeps back what the proxy trainings of its best candidates so far will take,
estimated by `nas.evaluation.proxy.estimated_seconds` from a few timed training steps. Here, for the first
`--count` distinct winners of bench/supernet_search.json (the networks such a search proxy-trains, 3-25M FLOPs at
32 px), the estimate and then the proxy training it estimates (`train_and_evaluate`), one after the other, on the
search's task: Fashion-MNIST, 4,000 training images at 32 px, the proxy's defaults, 2 threads. Per network: both
seconds and actual / estimate; over them, that ratio's mean, sd and maximum (with the margin a search keeps).
About a minute a network on 2 cores (6 networks: 5 minutes). Results go to bench/proxy_time_estimate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench_json import default_path, write_json

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nas.evaluation.proxy import estimated_seconds, train_and_evaluate  # noqa: E402
from nas.search.study import arch_key  # noqa: E402
from nas.search.supernet_search import RESERVE_MARGIN  # noqa: E402
from nas.space.spec import spec_from_dict  # noqa: E402
from nas.training.config import ProxyConfig, TaskConfig  # noqa: E402
from nas.training.data import load_task_data  # noqa: E402

THREADS = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--out", type=Path, default=default_path(__file__))
    args = parser.parse_args()
    if args.count < 1:
        print("proxy_time_estimate: --count must be at least 1", file=sys.stderr)
        return 2
    searched = json.loads((HERE / "supernet_search.json").read_text())
    winners: dict[str, dict] = {}
    for key, run in searched["runs"].items():
        if run["winner"] is not None:
            winners.setdefault(arch_key(spec_from_dict(run["winner"]["arch"])), {"run": key, **run["winner"]})
    chosen = list(winners.values())[:args.count]
    data = load_task_data(TaskConfig(dataset="fashion-mnist", threads=THREADS), 32)
    proxy = ProxyConfig()
    networks = []
    for winner in chosen:
        spec = spec_from_dict(winner["arch"])
        start = time.perf_counter()
        estimate = estimated_seconds(spec, data, proxy)
        estimating = time.perf_counter() - start
        start = time.perf_counter()
        train_and_evaluate(spec, data, proxy)
        actual = time.perf_counter() - start
        networks.append({"winner_of": winner["run"], "flops": winner["flops"], "estimate_seconds": estimate,
                         "estimating_seconds": estimating, "actual_seconds": actual, "ratio": actual / estimate})
        print(f"{winner['run']}: {winner['flops'] / 1e6:.1f}M FLOPs, estimate {estimate:.1f} s (in {estimating:.1f} s),"
              f" proxy training {actual:.1f} s, ratio {actual / estimate:.2f}", flush=True)
    ratios = [n["ratio"] for n in networks]
    write_json(args.out, {
        "task": "fashion-mnist, 4,000 training images at 32 px, proxy defaults", "threads": THREADS,
        "flops": "multiply-accumulates of conv and linear layers at 32 px", "margin": RESERVE_MARGIN,
        "networks": networks,
        "ratio": {"mean": statistics.fmean(ratios), "sd": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
                  "max": max(ratios)},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
