"""`python -m bench`: every bench with its budget on 2 CPU cores, and one way to run any of them.

    python -m bench                         # the list: name, budget, resumable, what it measures
    python -m bench run search_speed        # one bench (several names run in the order given)
    python -m bench run --budget 15m        # every bench whose budget fits in 15 minutes, in the listed order
    python -m bench run surrogate-chain     # the surrogate chain in order: table, fit, benchmark, winners, confirm
    python -m bench run --dry-run ...       # print the commands instead

Each bench is `python bench/<name>.py`, writes bench/<name>.json (its command, date, machine and commit inside)
and says more in its own docstring. A resumable bench picks up from its committed JSON, so it can span sessions
and machines. Run one bench at a time, and not beside the test suite: timings and flaky tests follow contention.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
USAGE_ERROR = 2


@dataclass(frozen=True)
class Bench:
    name: str
    minutes: float  # on 2 CPU cores, from its last committed run
    what: str
    resumable: bool = False
    needs: str = ""  # what it reads beyond the embedded data: `make fashion-mnist`, `make browser`

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}.py"


BENCHES = (
    Bench("flops_counters", 1, "analytic vs. thop FLOPs counter per spec (B0 at 224 px): equal counts, microseconds"),
    Bench("dashboard_pareto", 3, "the Pareto page with 10,000 trials: front, page script and browser seconds",
          needs="make browser for --browser"),
    Bench("export_memory", 6, "peak memory and seconds of exporting EfficientNet B0-B7 (ONNX and .pt2)"),
    Bench("export_int8", 15, "a trained Fashion-MNIST family exported with --quantize int8: float and int8 accuracy, "
          "size", needs="make fashion-mnist; bench/final_training.py's search database"),
    Bench("distributed_training", 6, "data-parallel training: 1 process x all cores against one process per core",
          needs="make fashion-mnist"),
    Bench("search_speed", 10, "the default search: wall time, trials per minute, seconds per trial"),
    Bench("proxy_time_estimate", 5, "the proxy training a supernet search keeps time back for, estimated from a "
          "few steps, against the training itself", needs="make fashion-mnist"),
    Bench("training_memory", 10, "peak memory and images/s of final training with the whole data set loaded",
          resumable=True, needs="make fashion-mnist"),
    Bench("parallel_trials", 12, "the same search with --workers 1 and 2: wall times, lost or duplicated rows"),
    Bench("stem_stride", 15, "EfficientNet-B0 with stem stride 1 and 2 at 32 and 64 px: the rule behind "
          "--stem-stride auto", resumable=True, needs="make fashion-mnist"),
    Bench("fidelity_budget", 40, "the default 9-minute run with and without successive halving: candidates, winner",
          resumable=True),
    Bench("final_training", 110, "found B0 against EfficientNet-B0 trained 30 epochs on Fashion-MNIST",
          needs="make fashion-mnist"),
    Bench("search_efficacy", 300, "every strategy at one trial budget, 3 seeds, two tasks: best reward, hypervolume",
          resumable=True, needs="make fashion-mnist"),
    Bench("family_scaling", 300, "the found family against EfficientNet's, by scaling rule (short plan; --plan medium "
          "is about 18 hours more, --plan full a GPU's job with --concurrent auto)", resumable=True,
          needs="make fashion-mnist"),
    Bench("proxy_fidelity", 600, "how well each proxy, FLOPs and zero-cost score rank 25 trained architectures",
          resumable=True, needs="make fashion-mnist"),
    Bench("evaluation_table", 600, "architectures drawn uniformly, each scored like a search trial (grows across "
          "sessions with --commit)", resumable=True, needs="make fashion-mnist"),
    Bench("surrogate_fit", 5, "held-out Kendall tau of surrogates fitted on the evaluation table"),
    Bench("search_surrogate", 180, "every strategy through nas.search with the surrogate answering, 50 seeds",
          resumable=True),
    Bench("surrogate_winners", 10, "each strategy's surrogate winners trained with the real proxy",
          resumable=True, needs="make fashion-mnist"),
    Bench("supernet_fidelity", 90, "Kendall tau of supernet scores against the evaluation table at 1, 2, 4 "
          "supernet epochs; seconds per candidate", resumable=True, needs="make fashion-mnist"),
    Bench("supernet_search", 570, "supernet scoring against tpe and random at 9 and 30 minutes, 5 seeds, winners "
          "retrained; reuse of a stored supernet", resumable=True, needs="make fashion-mnist"),
    Bench("latency", 90, "predicted against measured latency of the 404 table networks (eager, ONNX Runtime), FLOPs "
          "against latency, noise across processes; a latency-target search beside a FLOPs-target one",
          resumable=True, needs="make fashion-mnist for --parts searches"),
    Bench("nni_patches", 40, "each NNI patch taken out of a copy of the checkout: do the tests its comment names "
          "fail?", needs="PostgreSQL and OpenSSH's server, as .ci/run sets them up, and $EFFNAS_TEST_PG"),
    Bench("search_confirm", 420, "tpe and random on real training, 60 trials x 5 seeds, winners retrained",
          resumable=True, needs="make fashion-mnist"),
)
# Each step reads what the one before wrote: the table, the surrogate fitted on it, strategies on the surrogate,
# their winners trained for real, and the strategies confirmed on real training.
SURROGATE_CHAIN = ("evaluation_table", "surrogate_fit", "search_surrogate", "surrogate_winners", "search_confirm")
BY_NAME = {bench.name: bench for bench in BENCHES}


def format_minutes(minutes: float) -> str:
    return f"{minutes:g} min" if minutes < 90 else f"{round(minutes / 60, 1):g} h"


def parse_budget(text: str) -> float:
    """'15m', '2h', '90' (minutes) -> minutes."""
    units = {"m": 1, "h": 60}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "m")
    try:
        minutes = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read budget {text!r}; write e.g. 15m or 2h") from None
    if minutes <= 0:
        raise argparse.ArgumentTypeError(f"budget must be positive, got {text!r}")
    return minutes


def listing() -> str:
    width = max(len(bench.name) for bench in BENCHES)
    lines = [f"{'bench':<{width}}  {'budget':>7}  {'resumable':9}  what (needs)"]
    for bench in BENCHES:
        needs = f" ({bench.needs})" if bench.needs else ""
        lines.append(f"{bench.name:<{width}}  {format_minutes(bench.minutes):>7}  {'yes' if bench.resumable else '':9}  "
                     f"{bench.what}{needs}")
    lines += ["", f"surrogate-chain: {' -> '.join(SURROGATE_CHAIN)}", "Budgets are on 2 CPU cores."]
    return "\n".join(lines)


def chosen(names: list[str], budget: float | None) -> list[Bench]:
    """The benches to run, in order; ValueError names an unknown one."""
    if budget is not None:
        return [bench for bench in BENCHES if bench.minutes <= budget]
    expanded = [step for name in names for step in (SURROGATE_CHAIN if name == "surrogate-chain" else (name,))]
    unknown = [name for name in expanded if name not in BY_NAME]
    if unknown:
        raise ValueError(f"no bench named {', '.join(unknown)}; `python -m bench` lists them")
    return [BY_NAME[name] for name in expanded]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="List or run effnas's benches.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("list", help="every bench with its budget (the default)")
    run = commands.add_parser("run", help="run benches by name, by budget, or the surrogate chain")
    run.add_argument("names", nargs="*", metavar="NAME", help="bench names, or surrogate-chain")
    run.add_argument("--budget", type=parse_budget, help="every bench whose budget fits, e.g. 15m or 2h")
    run.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "list"):
        print(listing())
        return 0
    if bool(args.names) == (args.budget is not None):
        print("python -m bench run: error: give bench names or --budget, not both or neither", file=sys.stderr)
        return USAGE_ERROR
    try:
        benches = chosen(args.names, args.budget)
    except ValueError as exc:
        print(f"python -m bench run: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    total = sum(bench.minutes for bench in benches)
    print(f"{len(benches)} bench(es), about {format_minutes(total)} on 2 cores: {', '.join(b.name for b in benches)}",
          flush=True)
    started = time.monotonic()
    for index, bench in enumerate(benches, 1):
        command = [sys.executable, str(bench.script.relative_to(HERE.parent))]
        print(f"[{index}/{len(benches)}] {' '.join(command[1:])} (about {format_minutes(bench.minutes)})", flush=True)
        if args.dry_run:
            continue
        code = subprocess.run(command, cwd=HERE.parent).returncode
        if code != 0:
            print(f"python -m bench run: error: {bench.name} ended with exit code {code}", file=sys.stderr)
            return code
        print(f"[{index}/{len(benches)}] {bench.name} done; {format_minutes(round((time.monotonic() - started) / 60, 1))}"
              " so far", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
