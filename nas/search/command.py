"""`python -m nas.search --target-flops 400M`: search for a baseline network under a FLOPs (or, with
`--target-latency`, a latency) budget.

Each candidate is scored by ACC x (COST/T)^w on a short proxy training; every trial is written to the database
as it ends. Ctrl-C stops after saving what has finished; `--resume ID` continues.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import effnas.cli as cli
from db import DatabaseError, absolute_url, db_argument, describe_url, open_database, resolve_url, searches
from effnas.cli import CommandParser, UsageError, add_db_option, command, fail
from nas.evaluation.config import ZERO_COST_SCORES
from nas.search.config import (
    BUDGET_BOUND_TRIALS,
    DEFAULT_TIME_BUDGET,
    EVALUATORS,
    FIDELITIES,
    PRESCREEN_STRATEGIES,
    STRATEGIES,
    SearchConfig,
    check_config,
)
from nas.search.targets import add_target_options, check_latency_target, reward_from_args
from nas.space.flops import FLOPS_CONVENTION
from nas.space.search_space import SpaceError, auto_stem_stride, parse_fixed
from nas.training.config import DATASETS, DEVICES, PROXY_OPTIMIZERS, ProxyConfig, SupernetConfig, TaskConfig, default

if TYPE_CHECKING:
    from db import Database
    from nas.search.study import Study
    from nas.search.trial_processes import TrialProcessOptions
    from nas.training.data import TaskData

LOG_DIR = Path(".effnas") / "logs"
# Options that a resumed search may change; every other option of the defining groups defines the search.
RESUME_OVERRIDES = ("trials", "time_budget")


def _d(config: type, name: str) -> str:
    return f"({default(config, name)})"


class SearchParser(CommandParser):
    """The command's parser, which knows the options that define a search (they conflict with --resume)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.defining: list[argparse.Action] = []

    def defining_group(self, title: str) -> _DefiningGroup:
        return _DefiningGroup(self.add_argument_group(title), self.defining)


class _DefiningGroup:
    """An argument group whose options, but RESUME_OVERRIDES, define a search."""

    def __init__(self, group: argparse._ArgumentGroup, defining: list[argparse.Action]) -> None:
        self.group = group
        self.defining = defining

    def add_argument(self, *flags: str, **kwargs: Any) -> argparse.Action:
        action = self.group.add_argument(*flags, **kwargs)
        if action.dest not in RESUME_OVERRIDES:
            self.defining.append(action)
        return action


def build_parser() -> SearchParser:
    # Defaults live in the config dataclasses: an option left out is None here, so that --resume can tell it
    # apart from one given.
    parser = SearchParser(
        prog="python -m nas.search",
        description="Multi-objective architecture search (MnasNet space, EfficientNet-B0 stages) under a FLOPs "
        f"or latency budget. {FLOPS_CONVENTION}.",
    )
    add_target_options(parser.defining_group("what to search for"))
    _add_strategy_options(parser.defining_group("how to search"))
    _add_proxy_options(parser.defining_group("proxy task"))
    _add_parallel_options(parser.add_argument_group("parallel trials (NNI's training-service engine)"))
    run = parser.add_argument_group("bookkeeping")
    add_db_option(run)
    parser.defining.append(run.add_argument("--name", default=None, help="a name for this search"))
    run.add_argument("--resume", type=int, default=None, metavar="ID", help="continue search ID from the database")
    run.add_argument("--verbose", action="store_true", help="show NNI's and PyTorch's logs in the terminal")
    return parser


def _add_strategy_options(how: _DefiningGroup) -> None:
    how.add_argument("--strategy", choices=STRATEGIES,
                     help="search strategy; tpe: NNI's TPE (20 random start-up trials, then its density model); "
                     "predictor: trees trained on the trials so far pick, by mean + spread, among mutations of the "
                     f"best trials (BANANAS-style) {_d(SearchConfig, 'strategy')}")
    how.add_argument("--trials", type=int, help=f"distinct architectures to evaluate {_d(SearchConfig, 'trials')}; with "
                     f"supernet scoring or a --time-budget given, {BUDGET_BOUND_TRIALS}: the budget ends the search")
    how.add_argument("--time-budget", help="start no trial after this long, e.g. 30m, 1.5h, or none "
                     f"({cli.format_duration(DEFAULT_TIME_BUDGET)})")
    how.add_argument("--prescreen", type=int, metavar="N",
                     help="score N untrained candidates by a training-free score for each one trained, and train "
                     f"the best (random, evolution, reinforce) {_d(SearchConfig, 'prescreen')}")
    how.add_argument("--prescreen-score", choices=ZERO_COST_SCORES,
                     help=f"the training-free score of --prescreen {_d(SearchConfig, 'prescreen_score')}")
    how.add_argument("--fidelity", choices=FIDELITIES,
                     help="full: train every candidate on the whole proxy; halving: successive halving, every "
                     "candidate trains one epoch of the proxy and those whose reward is in the best 1/eta so far "
                     f"train on to the full proxy from where they stopped {_d(SearchConfig, 'fidelity')}")
    how.add_argument("--eta", type=int, help=f"successive halving's ratio, at least 2 {_d(SearchConfig, 'eta')}")
    how.add_argument("--evaluator", choices=EVALUATORS,
                     help="proxy: train every candidate on the proxy; supernet: score candidates on a weight-sharing "
                     "supernet of the space (trained once per task and space, stored, reused for any target), then "
                     "proxy-train the best --proxy-train of them (default supernet; proxy with --trials, --workers, "
                     "--nni-config, --fidelity halving or --prescreen)")
    how.add_argument("--proxy-train", type=int, metavar="K", dest="proxy_trained",
                     help="with --evaluator supernet: proxy-train the K candidates with the best supernet rewards; "
                     f"only they can win {_d(SearchConfig, 'proxy_trained')}")
    how.add_argument("--supernet-epochs", type=int, metavar="N",
                     help=f"epochs of the supernet's sandwich training {_d(SupernetConfig, 'epochs')}")
    how.add_argument("--kernel-transform", action="store_true", default=None,
                     help="learn OFA's transform from the 5x5 kernel's centre to the 3x3 kernel")
    how.add_argument("--calibration-images", type=int, metavar="N",
                     help="training images a path's BatchNorm statistics are re-estimated on before it is scored "
                     f"{_d(SupernetConfig, 'calibration_images')}")
    how.add_argument("--seed", type=int, help=f"same seed, same trials {_d(ProxyConfig, 'seed')}")
    how.add_argument("--no-reference", action="store_true", default=None,
                     help="do not evaluate EfficientNet-B0 for comparison")


def _add_proxy_options(proxy: _DefiningGroup) -> None:
    proxy.add_argument("--dataset", choices=DATASETS,
                       help=f"data set {_d(TaskConfig, 'dataset')}; mnist is embedded, fashion-mnist is read from "
                       "Debian's dataset-fashion-mnist package unless --data-dir is given; only training files are read")
    proxy.add_argument("--data-dir", help="folder of the data set (idx, cifar10, imagefolder; fashion-mnist optional)")
    proxy.add_argument("--subset", type=_subset,
                       help=f"use this many of the training images (train + validation; {default(TaskConfig, 'subset')}), "
                       "or all")
    proxy.add_argument("--proxy-resolution", type=int, help=f"training resolution of the proxy {_d(ProxyConfig, 'resolution')}")
    proxy.add_argument("--epochs", type=int, help=f"proxy training epochs {_d(ProxyConfig, 'epochs')}")
    proxy.add_argument("--batch-size", type=int, help=f"proxy batch size {_d(ProxyConfig, 'batch_size')}")
    proxy.add_argument("--lr", type=cli.finite_float, help=f"peak learning rate, one-cycle {_d(ProxyConfig, 'lr')}")
    proxy.add_argument("--optimizer", choices=PROXY_OPTIMIZERS, help=f"proxy optimiser {_d(ProxyConfig, 'optimizer')}")
    proxy.add_argument("--weight-decay", type=cli.finite_float, help=f"proxy weight decay {_d(ProxyConfig, 'weight_decay')}")
    proxy.add_argument("--label-smoothing", type=cli.finite_float,
                       help=f"label smoothing of the proxy's loss {_d(ProxyConfig, 'label_smoothing')}")
    proxy.add_argument("--device", choices=DEVICES,
                       help="auto: a GPU when the training process sees one, else the CPU (auto)")
    proxy.add_argument("--threads", type=int,
                       help="CPU threads per training process (default: cores / workers); stored, since results "
                       "depend on it")


def _add_parallel_options(parallel: argparse._ArgumentGroup) -> None:
    parallel.add_argument("--workers", type=int, default=None,
                          help="train this many candidates at once, each in its own process started by NNI's manager "
                          "(default 1: one at a time, in this process)")
    parallel.add_argument("--nni-config", default=None, metavar="FILE",
                          help="YAML or JSON with NNI's trainingService (local with gpuIndices, remote over SSH, ...), "
                          "trialConcurrency and trialGpuNumber; see the README")
    parallel.add_argument("--nni-port", type=int, default=None,
                          help="port of NNI's manager (default: a free one)")
    parallel.add_argument("--nni-address", default=None, metavar="IP",
                          help="the address NNI's manager listens on, which the trial machines reach (default: "
                          "127.0.0.1 for local trials; for remote ones nniManagerIp, else this machine's address on "
                          "the route to the first machine); NNI's manager has no authentication")


def _subset(text: str) -> int | str:
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or 'all', got {text!r}") from None


def _given(args: argparse.Namespace, name: str, fallback: Any) -> Any:
    value = getattr(args, name)
    return fallback if value is None else value


def stem_stride_from_args(args: argparse.Namespace, resolution: int) -> tuple[int, str]:
    """The stem stride asked for, or chosen by the auto rule at the deployment resolution, and why."""
    if args.stem_stride in (None, "auto"):
        stride, why = auto_stem_stride(resolution)
        return stride, f"auto: {why}"
    return int(args.stem_stride), "--stem-stride"


def _stem_reason(args: argparse.Namespace, config: SearchConfig) -> str:
    if args.resume is not None:
        return "stored with the search"
    return stem_stride_from_args(args, config.reward.resolution)[1]


def evaluator_from_args(args: argparse.Namespace) -> tuple[str, str]:
    """The evaluator asked for, or the default's choice given the other options, and why. The default scores
    candidates on a supernet unless an option sizes or spreads the search in proxy-trained candidates: --trials
    counts them, --workers and --nni-config train them in other processes, halving and prescreening choose which."""
    if args.evaluator is not None:
        return args.evaluator, "--evaluator"
    proxy_options = [flag for flag, given in (
        ("--trials", args.trials is not None), ("--workers", args.workers is not None),
        ("--nni-config", args.nni_config is not None), ("--fidelity halving", args.fidelity == "halving"),
        ("--prescreen", args.prescreen is not None and args.prescreen > 1)) if given]
    if proxy_options:
        return "proxy", (f"the default with {', '.join(proxy_options)}, which count or spread proxy-trained "
                         "candidates; --evaluator supernet scores on a supernet")
    return default(SearchConfig, "evaluator"), "the default"


def _evaluator_reason(args: argparse.Namespace) -> str:
    return "stored with the search" if args.resume is not None else evaluator_from_args(args)[1]


def config_from_args(args: argparse.Namespace, workers: int = 1) -> SearchConfig:
    """Validate everything that needs no database or data; UsageError names the first problem. `workers` trials
    train at once."""
    reward = reward_from_args(args)
    task = TaskConfig(
        dataset=_given(args, "dataset", default(TaskConfig, "dataset")),
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        subset=None if args.subset == "all" else _given(args, "subset", default(TaskConfig, "subset")),
        # Parallel trial processes share the cores.
        threads=args.threads if args.threads is not None else max(1, (os.cpu_count() or 1) // workers),
        device=_given(args, "device", default(TaskConfig, "device")),
    )
    proxy = ProxyConfig(
        resolution=_given(args, "proxy_resolution", default(ProxyConfig, "resolution")),
        **{name: _given(args, name, default(ProxyConfig, name))
           for name in ("epochs", "batch_size", "lr", "seed", "optimizer", "label_smoothing", "weight_decay")},
    )
    supernet = SupernetConfig(
        epochs=_given(args, "supernet_epochs", default(SupernetConfig, "epochs")),
        kernel_transform=bool(_given(args, "kernel_transform", default(SupernetConfig, "kernel_transform"))),
        calibration_images=_given(args, "calibration_images", default(SupernetConfig, "calibration_images")),
    )
    evaluator = evaluator_from_args(args)[0]
    time_budget = cli.parse_duration(args.time_budget) if args.time_budget is not None else DEFAULT_TIME_BUDGET
    budget_bound = evaluator == "supernet" or (args.time_budget is not None and time_budget is not None)
    trials = BUDGET_BOUND_TRIALS if budget_bound else default(SearchConfig, "trials")
    try:
        fixed = parse_fixed(args.fix or [])
    except SpaceError as exc:
        raise UsageError(str(exc)) from None
    config = SearchConfig(
        reward=reward, task=task, proxy=proxy,
        strategy=_given(args, "strategy", default(SearchConfig, "strategy")),
        trials=_given(args, "trials", trials),
        time_budget=time_budget,
        fixed=fixed,
        stem_stride=stem_stride_from_args(args, reward.resolution)[0],
        reference=not args.no_reference,
        prescreen=_given(args, "prescreen", default(SearchConfig, "prescreen")),
        prescreen_score=_given(args, "prescreen_score", default(SearchConfig, "prescreen_score")),
        fidelity=_given(args, "fidelity", default(SearchConfig, "fidelity")),
        eta=_given(args, "eta", default(SearchConfig, "eta")),
        evaluator=evaluator, supernet=supernet,
        proxy_trained=_given(args, "proxy_trained", default(SearchConfig, "proxy_trained")),
    )
    if args.strategy is None and config.prescreen > 1 and config.strategy not in PRESCREEN_STRATEGIES:
        raise UsageError(f"--prescreen needs a strategy that proposes one candidate at a time, and the default "
                         f"({config.strategy}) does not: add --strategy {', '.join(PRESCREEN_STRATEGIES)}")
    check_config(config)
    return config


def trial_options_from_args(args: argparse.Namespace, db_url: str) -> TrialProcessOptions | None:
    """How to run trial processes, or None to train in this process; UsageError names the first problem."""
    if args.workers is None and args.nni_config is None:
        if args.nni_address is not None:
            raise UsageError("--nni-address goes with --workers or --nni-config")
        return None
    from nas.search.trial_processes import trial_process_options

    return trial_process_options(args.workers, args.nni_config, args.nni_port, args.nni_address, db_url)


def defining_options(parser: SearchParser, args: argparse.Namespace) -> list[str]:
    """The options given that define a search (and so conflict with --resume)."""
    return [action.option_strings[0] for action in parser.defining if getattr(args, action.dest) is not None]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _open_search(args: argparse.Namespace, parser: argparse.ArgumentParser, db_url: str,
                 trial_options: TrialProcessOptions | None) -> tuple[Database, int, SearchConfig, TaskData]:
    """The database, the search id, its config and its data: a stored search for --resume, else a new one.
    Everything that needs no data is checked before PyTorch is imported, so a usage error comes back at once."""
    # Where trial processes train, this process needs the data only for its shape.
    data_device = "cpu" if trial_options is not None else None
    if args.resume is None:
        config = config_from_args(args, trial_options.workers if trial_options is not None else 1)
        from nas.training.data import load_task_data

        _check_engine(config, trial_options)
        data = load_task_data(config.task, config.proxy.resolution, device=data_device)
        _check_trial_machines(config, trial_options, db_url)
        db = open_database(db_url)
        from nas.search.study import create_search
        from nas.search.supernet_search import check_stored_supernet
        check_stored_supernet(db, config, data)

        return db, create_search(db, config, args.name), config, data
    conflicts = defining_options(parser, args)
    if conflicts:
        raise UsageError(f"--resume takes the search's stored configuration; drop {', '.join(conflicts)}")
    db = open_database(db_url, create=False, migrate=True)
    search = searches.get_search(db, args.resume)
    if search is None:
        raise UsageError(f"no search with id {args.resume} in {describe_url(db_url)}")
    stored = SearchConfig.from_config(search.config)
    overrides: dict[str, Any] = {}
    if args.trials is not None:
        overrides["trials"] = args.trials
    if args.time_budget is not None:
        overrides["time_budget"] = cli.parse_duration(args.time_budget)
    config = SearchConfig.from_config({**stored.to_config(), **overrides})
    _check_engine(config, trial_options)
    from nas.training.data import load_task_data

    data = load_task_data(config.task, config.proxy.resolution, device=data_device)
    _check_trial_machines(config, trial_options, db_url)
    from nas.search.supernet_search import check_stored_supernet
    check_stored_supernet(db, config, data)
    if overrides:
        searches.update_search_config(db, args.resume, config.to_config(), config.trials)
    return db, args.resume, config, data


def _check_engine(config: SearchConfig, trial_options: TrialProcessOptions | None) -> None:
    """What must run in this process: supernet scoring and latency measurement."""
    if config.evaluator == "supernet" and trial_options is not None:
        raise UsageError("--evaluator supernet scores candidates in this process; drop --workers and --nni-config")
    check_latency_target(config.reward, trial_options is not None)


def _check_trial_machines(config: SearchConfig, trial_options: TrialProcessOptions | None, db_url: str) -> None:
    """The machines that will train can: this one's device for local trial processes, every remote machine
    (SSH, Python, effnas's dependencies, the database, the data folder) for NNI's remote service."""
    from nas.training.config import resolve_device

    if trial_options is not None and trial_options.platform == "local":
        resolve_device(config.task.device)  # the trial processes would all fail on this machine
    if trial_options is None or trial_options.platform != "remote":
        return
    import nni

    from nas.search.remote_machines import RemoteMachineError, RemoteTask, check_machines, machine_name

    machines = trial_options.nni_config["trainingService"].get("machineList") or []
    task = RemoteTask(db_url, config.task.dataset, config.task.data_dir, nni.__version__)
    try:
        check_machines(machines, task)
    except RemoteMachineError as exc:
        raise UsageError(str(exc)) from None
    print(f"Remote machines ready (SSH, Python, NNI {nni.__version__}, effnas's dependencies, the database): "
          f"{', '.join(machine_name(machine) for machine in machines)}", file=sys.stderr)


def run_study(study: Study, trial_options: TrialProcessOptions | None = None, db_url: str | None = None,
              on_start: Callable[[str, int, Path], None] | None = None) -> None:
    """Run the search's strategy on `study` until its budget ends: in this process, or with `trial_options` on
    NNI's trial processes, which store their trials in the database at `db_url`. The study is started here;
    ending it (finished, interrupted, failed) is the caller's."""
    from nas.search.strategies import make_strategy, run_strategy
    from nas.search.targets import measure_reported
    from nas.search.trial_processes import run_strategy_on_trial_processes

    config = study.config
    study.start()
    if trial_options is None and config.reference:
        study.evaluate_reference()
    if config.evaluator == "supernet":
        from nas.search.supernet_search import prepare_supernet_scoring, proxy_train_best

        prepare_supernet_scoring(study)
    strategy = make_strategy(
        config.strategy, config.seed, config.trials, study.space,
        batch=1 if trial_options is None else trial_options.workers, prescreen=config.prescreen,
        screen_score=study.screen_score, describe=study.predictor_features,
    )
    if trial_options is None:
        run_strategy(study.space, strategy, study.evaluate_sample, study.budget_available)
        if config.evaluator == "supernet":
            proxy_train_best(study)
        measure_reported(study)
        return
    from nas.search.trial_entry import entry_arguments, train_in_trial_process

    run_strategy_on_trial_processes(
        study.space, strategy, study, train_in_trial_process, entry_arguments(db_url, study.search_id),
        trial_options, f"search-{study.search_id}.log", on_start=on_start,
    )


@command(build_parser)
def main(args: argparse.Namespace, parser: SearchParser) -> int:
    db_url = resolve_url(args.db)
    trial_options = trial_options_from_args(args, db_url)
    try:
        # NNI is imported (and its version checked) before a search is stored.
        from nas.search.strategies import route_nni_logs
    except ImportError as exc:
        fail(str(exc), code=1, prog=parser.prog)
    db, search_id, config, data = _open_search(args, parser, db_url, trial_options)

    from nas.evaluation.evaluator import Evaluator
    from nas.search.progress import ProgressDisplay, print_banner, search_summary
    from nas.search.study import Study, search_space
    from nas.search.targets import open_latency_table

    log_file = LOG_DIR / f"search-{search_id}.log"
    route_nni_logs(log_file, args.verbose)
    # Ctrl-C and SIGTERM stop the search cleanly even where the process was started with SIGINT ignored (a
    # background job of a script), which Python would otherwise keep.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    print_banner(search_id, config, data, trial_options, db_url, log_file, _stem_reason(args, config),
                 _evaluator_reason(args))
    started = time.monotonic()
    study = Study(db, search_id, config, Evaluator(config.reward, config.proxy, data,
                                                   open_latency_table(db, config, search_space(config, data.num_classes, data.in_channels))))
    display = ProgressDisplay(config, study.elapsed)
    study.events = display

    def announce(experiment_id: str, port: int, log_folder: Path) -> None:
        address = trial_options.manager_address or "all interfaces"
        display.note(f"NNI manager: experiment {experiment_id}, port {port} on {address}; trial logs under "
                     f"{log_folder.parent}")

    ended: BaseException | None = None
    try:
        run_study(study, trial_options, absolute_url(db_url), announce)
    except BaseException as exc:
        ended = exc
    finally:
        display.close()
    try:
        study.end(ended)
    except DatabaseError as exc:
        fail(str(exc), code=1, prog=parser.prog)
    if isinstance(ended, KeyboardInterrupt):
        print(f"\nInterrupted. Every finished trial is saved; continue with: python -m nas.search --resume "
              f"{search_id}{db_argument(db_url)}", file=sys.stderr)
        return 130
    if isinstance(ended, DatabaseError):
        fail(str(ended), code=1, prog=parser.prog)
    if ended is not None:
        raise ended
    print(search_summary(db, search_id, config, data, time.monotonic() - started))
    return 0
