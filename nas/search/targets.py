"""What a search weighs accuracy against: a FLOPs target, or a latency target measured on this machine.

A latency search predicts each candidate's latency with the latency table of its protocol (stored in the search's
database, calibrated on whole networks of its space), and measures its winner and reported front at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

import effnas.cli as cli
from effnas.cli import UsageError
from nas.evaluation.config import CONSTRAINTS, RewardConfig
from nas.evaluation.latency import RUNTIMES
from nas.space.search_space import DIMENSIONS
from nas.training.config import default

if TYPE_CHECKING:
    from db import Database
    from nas.evaluation.latency_table import LatencyTable
    from nas.search.config import SearchConfig
    from nas.search.study import Study

LATENCY_FIELDS = ("latency_runtime", "latency_batch", "latency_threads", "latency_device", "latency_calibration")


def _d(name: str) -> str:
    return f"({default(RewardConfig, name)})"


def add_target_options(what: Any) -> None:
    what.add_argument("--target-flops", help="FLOPs target T, e.g. 400M, 0.4G, 4e8 (multiply-accumulates)")
    what.add_argument("--target-latency", help="latency target T instead, e.g. 3ms: the latency predicted on this "
                      "machine under --latency-runtime, --latency-batch and --latency-threads")
    what.add_argument("--latency-runtime", choices=RUNTIMES,
                      help=f"eager: PyTorch in inference mode, channels-last; onnxruntime: ONNX Runtime {_d('latency_runtime')}")
    what.add_argument("--latency-batch", type=int, help=f"batch size of the latency target {_d('latency_batch')}")
    what.add_argument("--latency-threads", type=int, help=f"intra-op threads of the latency target {_d('latency_threads')}")
    what.add_argument("--latency-device", choices=("cpu", "cuda"), help=f"where latency is measured {_d('latency_device')}")
    what.add_argument("--latency-calibration", type=int, metavar="N",
                      help="whole networks of the space the latency table is fitted on; each is measured once per "
                      f"protocol, about 12 s the first time {_d('latency_calibration')}")
    what.add_argument("--resolution", type=int, help=f"input resolution the FLOPs (or latency) are counted at {_d('resolution')}")
    what.add_argument("--constraint", choices=CONSTRAINTS,
                      help=f"soft: w=-0.07 on both sides of T; hard: w=0 below T, -1 above {_d('constraint')}")
    what.add_argument("--w", type=cli.finite_float, help="override the reward exponent w")
    what.add_argument("--max-flops-ratio", type=cli.finite_float,
                      help=f"reject without training candidates above this multiple of T {_d('max_flops_ratio')}")
    what.add_argument("--fix", action="append", metavar="DIM=VALUE",
                      help=f"pin a dimension for all stages, e.g. --fix block=mbconv_e6 (dims: {', '.join(DIMENSIONS)})")
    what.add_argument("--stem-stride", choices=("auto", "1", "2"),
                      help="stride of the stem conv; auto: 1 where B0's five stride-2 steps would leave under 2x2 "
                      "before the head at --resolution (32 px and below), else B0's 2 (auto)")


def reward_from_args(args: argparse.Namespace) -> RewardConfig:
    """The reward the options ask for: exactly one of --target-flops and --target-latency."""
    if (args.target_flops is None) == (args.target_latency is None):
        raise UsageError("give one target: --target-flops (e.g. 400M) or --target-latency (e.g. 3ms)")
    given = {name: getattr(args, name) for name in ("resolution", "constraint", "w", "max_flops_ratio", *LATENCY_FIELDS)
             if getattr(args, name) is not None}
    if args.target_flops is None:
        return RewardConfig(target_latency=cli.parse_latency(args.target_latency), **given)
    latency_options = [f"--{name.replace('_', '-')}" for name in LATENCY_FIELDS if name in given]
    if latency_options:
        raise UsageError(f"{', '.join(latency_options)} go with --target-latency, not --target-flops")
    return RewardConfig(target_flops=cli.parse_flops(args.target_flops), **given)


def check_latency_target(reward: RewardConfig, parallel: bool) -> None:
    """UsageError, one line, for a latency target this machine or this search cannot measure."""
    if reward.objective != "latency":
        return
    from nas.evaluation.latency import LatencyError

    try:
        reward.latency_protocol.check()
    except LatencyError as exc:
        raise UsageError(str(exc)) from None
    if parallel:
        raise UsageError("--target-latency measures on this machine between trainings; drop --workers and "
                         "--nni-config (latency measured beside parallel training is not the network's)")


def describe_target(reward: RewardConfig) -> str:
    """The target in words: FLOPs at a resolution, or a latency and what it is measured on."""
    from nas.space.flops import format_flops

    if reward.objective == "flops":
        return f"target {format_flops(reward.target_flops)} FLOPs at {reward.resolution}px"
    return (f"target {reward.target_latency:g} ms at {reward.resolution}px, measured on "
            f"{reward.latency_protocol.describe()}")


def busy_latency_note(load: float, threads: int, cores: int) -> str | None:
    """A note when other work occupies the cores a latency measurement needs."""
    if load + threads <= cores:
        return None
    return (f"note: this machine is busy (load {load:.1f} on {cores} cores): latencies measured now are slower and "
            "noisier than the network's own; the latency table keeps what it measures")


def open_latency_table(db: Database, config: SearchConfig, space: Any) -> LatencyTable | None:
    """The latency table of a latency search's protocol, calibrated on whole networks of its space (measured once,
    then read from the database); None for a FLOPs target."""
    reward = config.reward
    if reward.objective != "latency":
        return None
    from nas.evaluation.latency_table import LatencyTable, calibration_layouts

    table = LatencyTable(reward.latency_protocol, db)
    note = busy_latency_note(os.getloadavg()[0], reward.latency_threads, os.cpu_count() or 1)
    if note:
        print(note, file=sys.stderr)
    stored = len(table.figures)
    layouts = calibration_layouts(space, reward.latency_calibration)
    print(f"Latency table: {stored} figures stored for this protocol; calibrating on {len(layouts)} networks of the "
          "space...", file=sys.stderr, flush=True)
    table.calibrate(layouts)
    print(f"Latency table: {table.describe_fit()} ({table.measured_now} measured now)", file=sys.stderr)
    return table


def measure_reported(study: Study) -> None:
    """Measure the latency of a latency search's winner, its most accurate candidate within the target, its
    reported front (proxy-trained candidates, by predicted latency) and EfficientNet-B0's reference, and store
    each with its trial."""
    from db import trials
    from effnas.records import TrialStatus
    from nas.evaluation.pareto import pareto_front
    from nas.space.layout import network_layout
    from nas.space.spec import spec_from_dict

    table = study.evaluator.latency_table
    if table is None:
        return
    trained = [t for t in trials.trained_candidates(study.db, study.search_id) if t.latency_ms is not None]
    front = [trained[i] for i in pareto_front([t.latency_ms for t in trained], [t.accuracy for t in trained])]
    chosen = {t.id: t for t in front}
    for pick in (trials.best_trial(study.db, study.search_id),
                 trials.most_accurate_within(study.db, study.search_id, study.config.reward.target, "latency"),
                 trials.reference_trial(study.db, study.search_id)):
        if pick is not None and pick.status is TrialStatus.COMPLETE:
            chosen[pick.id] = pick
    for trial in chosen.values():
        if trial.measured_latency_ms is None:
            layout = network_layout(spec_from_dict(trial.arch), study.config.reward.resolution)
            trials.record_measured_latency(study.db, trial.id, table.measure(layout).median_ms)
