"""`python -m nas.search --target-flops 400M`: search for a baseline network under a FLOPs budget.

Each candidate is scored by ACC x (FLOPs/T)^w on a short proxy training; every trial is written to the database
as it ends. Ctrl-C stops after saving what has finished; `--resume ID` continues.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.cli import OneLineParser, UsageError, fail, format_duration, parse_duration, parse_flops
from nas.data import DATASETS, DataError, ProxyData
from nas.flops import FLOPS_CONVENTION, format_flops, format_params
from nas.reward import CONSTRAINTS
from nas.runner import (
    DEVICES,
    SearchEvents,
    SearchRunner,
    SearchSettings,
    TrialOutcome,
    best_trial,
    create_search,
    load_task_data,
    reference_trial,
    resolve_device,
)
from nas.space import SearchSpace, SpaceError, parse_fixed
from nas.spec import ArchSpec

if TYPE_CHECKING:
    from nas.driver import TrialProcessOptions

LOG_DIR = Path(".effnas") / "logs"
# Keeps the default run (no option but the target) under 10 minutes on a 2-core CPU.
DEFAULT_TIME_BUDGET = "9m"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m nas.search",
        description="Multi-objective architecture search (MnasNet space, EfficientNet-B0 stages) under a FLOPs "
        f"budget. {FLOPS_CONVENTION}.",
    )
    what = parser.add_argument_group("what to search for")
    what.add_argument("--target-flops", help="FLOPs target T, e.g. 400M, 0.4G, 4e8 (multiply-accumulates)")
    what.add_argument("--resolution", type=int, default=224, help="input resolution the FLOPs are counted at (224)")
    what.add_argument("--constraint", choices=CONSTRAINTS, default="soft",
                      help="soft: w=-0.07 on both sides of T; hard: w=0 below T, -1 above (default soft)")
    what.add_argument("--w", type=float, default=None, help="override the reward exponent w")
    what.add_argument("--max-flops-ratio", type=float, default=4.0,
                      help="reject without training candidates above this multiple of T (4)")
    what.add_argument("--fix", action="append", default=[], metavar="DIM=VALUE",
                      help="pin a dimension for all stages, e.g. --fix block=mbconv_e6 (dims: block, kernel, se, "
                      "skip, width, layers)")
    how = parser.add_argument_group("how to search")
    how.add_argument("--strategy", default="evolution", help="evolution (default), random, tpe or grid")
    how.add_argument("--trials", type=int, default=40, help="distinct architectures to evaluate (40)")
    how.add_argument("--time-budget", default=DEFAULT_TIME_BUDGET,
                     help=f"start no trial after this long, e.g. 30m, 1.5h, or none ({DEFAULT_TIME_BUDGET})")
    how.add_argument("--seed", type=int, default=0, help="same seed, same trials (0)")
    how.add_argument("--no-reference", action="store_true", help="do not evaluate EfficientNet-B0 for comparison")
    proxy = parser.add_argument_group("proxy task")
    proxy.add_argument("--dataset", default="mnist", help="mnist (embedded, default), cifar10 or imagefolder")
    proxy.add_argument("--data-dir", default=None, help="folder of the data set (cifar10, imagefolder)")
    proxy.add_argument("--subset", type=int, default=None, help="use only this many images (train + validation)")
    proxy.add_argument("--proxy-resolution", type=int, default=32, help="training resolution of the proxy (32)")
    proxy.add_argument("--epochs", type=int, default=3, help="proxy training epochs (3)")
    proxy.add_argument("--batch-size", type=int, default=128, help="proxy batch size (128)")
    proxy.add_argument("--lr", type=float, default=0.05, help="peak learning rate, SGD one-cycle (0.05)")
    proxy.add_argument("--device", default="auto", help="auto (a GPU when the training process sees one, default), "
                       "cpu or cuda")
    parallel = parser.add_argument_group("parallel trials (NNI's training-service engine)")
    parallel.add_argument("--workers", type=int, default=None,
                          help="train this many candidates at once, each in its own process started by NNI's manager "
                          "(default 1: one at a time, in this process)")
    parallel.add_argument("--nni-config", default=None, metavar="FILE",
                          help="YAML or JSON with NNI's trainingService (local with gpuIndices, remote over SSH, ...), "
                          "trialConcurrency and trialGpuNumber; see the README")
    parallel.add_argument("--nni-port", type=int, default=None,
                          help="port of NNI's manager (default: a free one; on 127.0.0.1 for local trials)")
    run = parser.add_argument_group("bookkeeping")
    run.add_argument("--db", default=None, help="database URL or SQLite path (default $EFFNAS_DB or effnas.db)")
    run.add_argument("--name", default=None, help="a name for this search")
    run.add_argument("--resume", type=int, default=None, metavar="ID", help="continue search ID from the database")
    run.add_argument("--threads", type=int, default=None,
                     help="CPU threads per training process (default: cores / workers); stored, since results "
                     "depend on it")
    run.add_argument("--verbose", action="store_true", help="show NNI's and PyTorch's logs in the terminal")
    return parser


def settings_from_args(args: argparse.Namespace, workers: int = 1) -> SearchSettings:
    """Validate everything that needs no database or data; UsageError names the first problem. `workers` trials
    train at once."""
    if args.target_flops is None:
        raise UsageError("--target-flops is required (e.g. --target-flops 400M)")
    target = parse_flops(args.target_flops)
    if args.dataset not in DATASETS:
        raise UsageError(f"unknown data set {args.dataset!r}; choose one of {', '.join(DATASETS)}")
    if args.dataset != "mnist" and not args.data_dir:
        raise UsageError(f"--dataset {args.dataset} needs --data-dir")
    positive = {"--trials": args.trials, "--epochs": args.epochs, "--batch-size": args.batch_size}
    for flag, value in positive.items():
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.resolution < 32 or args.proxy_resolution < 32:
        raise UsageError("--resolution and --proxy-resolution must be at least 32")
    if args.subset is not None and args.subset < 10:
        raise UsageError(f"--subset must be at least 10, got {args.subset}")
    if args.max_flops_ratio <= 1:
        raise UsageError(f"--max-flops-ratio must be above 1, got {args.max_flops_ratio}")
    if args.lr <= 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.device not in DEVICES:
        raise UsageError(f"unknown device {args.device!r}; choose one of {', '.join(DEVICES)}")
    try:
        fixed = parse_fixed(args.fix)
    except SpaceError as exc:
        raise UsageError(str(exc)) from None
    settings = SearchSettings(
        target_flops=target,
        strategy=args.strategy,
        trials=args.trials,
        time_budget=parse_duration(args.time_budget),
        resolution=args.resolution,
        proxy_resolution=args.proxy_resolution,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        constraint=args.constraint,
        w=args.w,
        max_flops_ratio=args.max_flops_ratio,
        dataset=args.dataset,
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        subset=args.subset,
        fixed=fixed,
        reference=not args.no_reference,
        # Parallel trial processes share the cores.
        threads=args.threads or max(1, (os.cpu_count() or 1) // workers),
        device=args.device,
    )
    _check_strategy(settings, SearchSpace(num_classes=10, in_channels=3, fixed=fixed).size())
    return settings


def _check_strategy(settings: SearchSettings, space_size: int) -> None:
    from nas.driver import make_strategy

    try:
        make_strategy(settings.strategy, settings.seed, settings.trials, space_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


_RESUME_CONFLICTS = (
    "target_flops", "strategy", "resolution", "constraint", "w", "dataset", "data_dir", "subset", "fix", "name",
    "no_reference", "proxy_resolution", "epochs", "batch_size", "lr", "seed", "max_flops_ratio", "threads", "device",
)


def trial_options_from_args(args: argparse.Namespace, db_url: str) -> TrialProcessOptions | None:
    """How to run trial processes, or None to train in this process; UsageError names the first problem."""
    from db.session import sqlite_path
    from nas.driver import NniConfigError, TrialProcessOptions, experiment_config

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.nni_port is not None and not 1024 <= args.nni_port <= 65534:
        raise UsageError(f"--nni-port must be between 1024 and 65534, got {args.nni_port}")
    nni_config = _read_nni_config(args.nni_config) if args.nni_config else {}
    concurrency = nni_config.pop("trialConcurrency", None)
    if concurrency is not None and args.workers is not None and concurrency != args.workers:
        raise UsageError(f"--workers {args.workers} and trialConcurrency {concurrency} in {args.nni_config} disagree")
    workers = args.workers or concurrency or 1
    if workers == 1 and not nni_config:
        return None
    options = TrialProcessOptions(workers=workers, nni_config=nni_config, port=args.nni_port)
    try:
        experiment_config(options)
    except NniConfigError as exc:
        raise UsageError(f"{args.nni_config}: {exc}" if args.nni_config else str(exc)) from None
    if options.platform != "local" and sqlite_path(db_url) is not None:
        raise UsageError(
            f"trials on the {options.platform} training service cannot write to a SQLite file on this machine; "
            "pass --db with a database server URL they can reach (postgresql://...)"
        )
    return options


def _read_nni_config(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --nni-config {path}: {exc.strerror}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} must hold a mapping of NNI settings (trainingService, trialConcurrency, ...)")
    if "trialConcurrency" in config and (not isinstance(config["trialConcurrency"], int)
                                         or config["trialConcurrency"] < 1):
        raise UsageError(f"{path}: trialConcurrency must be a whole number of at least 1")
    return config


def _explicit_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    return [name for name in _RESUME_CONFLICTS if getattr(args, name) != parser.get_default(name)]


class ProgressDisplay(SearchEvents):
    """A bar on a terminal (trial k of N, best reward, time left); one line per trial otherwise."""

    def __init__(self, settings: SearchSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.started_done = 0
        self.bar = None
        self.running: list[str] = []  # several at once when trial processes train in parallel
        self.best_text = "best reward -"

    def search_started(self, done: int) -> None:
        self.started_done = done
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.settings.trials, initial=done, file=sys.stderr, dynamic_ncols=True, unit="trial",
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} trials [{elapsed}]{postfix}",
            )
        elif done:
            print(f"resuming with {done} of {self.settings.trials} trials done", file=sys.stderr, flush=True)

    def _left(self, done: int) -> str:
        new = done - self.started_done
        elapsed = self.clock()
        parts = []
        if new > 0:
            parts.append(elapsed / new * (self.settings.trials - done))
        if self.settings.time_budget is not None:
            parts.append(max(0.0, self.settings.time_budget - elapsed))
        return f"~{format_duration(min(parts))} left" if parts else "time left: estimating"

    @staticmethod
    def _label(number: int, role: str) -> str:
        return "EfficientNet-B0 reference" if role == "reference" else f"trial {number}"

    def _describe_running(self, suffix: str = "") -> None:
        if self.bar is not None:
            self.bar.set_description_str(", ".join(self.running) + suffix)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def trial_started(self, number: int, role: str, spec: ArchSpec) -> None:
        label = self._label(number, role)
        self.running.append(label)
        if self.bar is not None:
            self._describe_running()
        else:
            print(f"{label}: training ...", file=sys.stderr, flush=True)

    def epoch_done(self, epoch: int, epochs: int) -> None:
        self._describe_running(f" (epoch {epoch}/{epochs})")

    def trial_finished(self, outcome: TrialOutcome, done: int, best: TrialOutcome | None) -> None:
        label = self._label(outcome.number, outcome.role)
        if label in self.running:
            self.running.remove(label)
            self._describe_running()
        if best is not None:
            self.best_text = f"best reward {best.reward:.4f} (acc {best.accuracy:.3f}, {format_flops(best.flops)})"
        result = _outcome_text(outcome)
        left = self._left(done)
        if self.bar is not None:
            if outcome.role == "candidate":
                self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"{self.best_text}, {left}")
        else:
            if outcome.role == "candidate":
                label += f" ({done}/{self.settings.trials} done)"
            print(f"{label}: {result} | {self.best_text} | {left}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _outcome_text(outcome: TrialOutcome) -> str:
    if outcome.status == "complete":
        return f"acc {outcome.accuracy:.3f}, {format_flops(outcome.flops)} FLOPs, reward {outcome.reward:.4f}"
    if outcome.status == "rejected":
        return f"rejected without training ({format_flops(outcome.flops)} FLOPs)"
    return f"failed: {outcome.error}"


def _summary(factory, search_id: int, settings: SearchSettings, data: ProxyData, db_url: str, seconds: float) -> str:
    from sqlalchemy import func, select

    from db import SearchRecord, TrialRecord

    with factory() as session:
        search = session.get(SearchRecord, search_id)
        counts = dict(
            session.execute(
                select(TrialRecord.status, func.count())
                .where(TrialRecord.search_id == search_id, TrialRecord.role == "candidate")
                .group_by(TrialRecord.status)
            ).all()
        )
        winner = best_trial(session, search_id)
        reference = reference_trial(session, search_id)
    total = sum(counts.values())
    lines = [
        f"Search {search_id} ({search.name}) {search.status}: {total} trials "
        f"({counts.get('complete', 0)} complete, {counts.get('failed', 0)} failed, "
        f"{counts.get('rejected', 0)} rejected) in {format_duration(seconds)}.",
        f"{FLOPS_CONVENTION}, counted at {settings.resolution}x{settings.resolution} with {data.in_channels} input "
        f"channel(s) and {data.num_classes} classes. Target {format_flops(settings.target_flops)}, "
        f"{settings.constraint} constraint. Accuracy: proxy validation accuracy on {data.name}.",
        "",
    ]
    columns = []
    if winner is not None:
        columns.append((f"winner (trial {winner.number})", winner))
    if reference is not None and reference.status == "complete":
        columns.append(("EfficientNet-B0 (same evaluator)", reference))
    if not columns:
        lines.append("No trial completed.")
        return "\n".join(lines)
    blocks = [column[1].block_strings.split() for column in columns]
    width = max(len(title) for title, _ in columns)
    width = max([width] + [len(b) for stages in blocks for b in stages]) + 2
    lines.append(f"{'':10}" + "".join(f"{title:<{width}}" for title, _ in columns))
    for index in range(max(len(stages) for stages in blocks)):
        cells = [stages[index] if index < len(stages) else "" for stages in blocks]
        lines.append(f"{'stage ' + str(index + 1):10}" + "".join(f"{cell:<{width}}" for cell in cells))
    rows: list[tuple[str, Any]] = [
        ("FLOPs", lambda t: format_flops(t.flops)),
        ("params", lambda t: format_params(t.params)),
        ("accuracy", lambda t: f"{t.accuracy:.4f}"),
        ("reward", lambda t: f"{t.reward:.4f}"),
    ]
    for label, show in rows:
        lines.append(f"{label:10}" + "".join(f"{show(trial):<{width}}" for _, trial in columns))
    db_arg = f" --db {db_url}" if db_url != "sqlite:///effnas.db" else ""
    lines += [
        "",
        f"Search id: {search_id}",
        f"Scale it:  python -m scaling.grow --search {search_id}{db_arg}",
        f"Dashboard: python -m dashboard{db_arg}",
    ]
    return "\n".join(lines)


def _quiet_libraries(verbose: bool) -> None:
    if not verbose:
        warnings.simplefilter("ignore")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries(args.verbose)

    from db import DatabaseError, SearchRecord, open_database, resolve_url
    from db.session import absolute_url, describe_url

    db_url = resolve_url(args.db)
    try:
        trial_options = trial_options_from_args(args, db_url)
        # Where trial processes train, this process needs the data only for its shape.
        data_device = "cpu" if trial_options is not None else None
        if args.resume is not None:
            conflicts = _explicit_options(args, parser)
            if conflicts:
                names = ", ".join("--" + name.replace("_", "-") for name in conflicts)
                raise UsageError(f"--resume takes the search's stored configuration; drop {names}")
            factory = open_database(db_url, create=False)
            with factory() as session:
                record = session.get(SearchRecord, args.resume)
                if record is None:
                    raise UsageError(f"no search with id {args.resume} in {describe_url(db_url)}")
                settings = SearchSettings.from_config(record.config)
            overrides: dict[str, Any] = {}
            if args.trials != parser.get_default("trials"):
                overrides["trials"] = args.trials
            if args.time_budget != parser.get_default("time_budget"):
                overrides["time_budget"] = parse_duration(args.time_budget)
            if overrides:
                settings = SearchSettings.from_config({**settings.to_config(), **overrides})
            data = load_task_data(settings, device=data_device)
            search_id = args.resume
            if overrides:
                with factory.begin() as session:
                    record = session.get(SearchRecord, search_id)
                    record.config = settings.to_config()
                    record.max_trials = settings.trials
        else:
            settings = settings_from_args(args, trial_options.workers if trial_options is not None else 1)
            data = load_task_data(settings, device=data_device)
            factory = None
        if trial_options is not None and trial_options.platform == "local":
            resolve_device(settings.device)  # the trial processes would all fail on this machine
        if factory is None:
            factory = open_database(db_url)
            search_id = create_search(factory, settings, args.name)
    except (UsageError, DataError, DatabaseError) as exc:
        fail(str(exc))

    from nas.driver import make_strategy, route_nni_logs, run_strategy, run_strategy_on_trial_processes

    log_file = LOG_DIR / f"search-{search_id}.log"
    route_nni_logs(log_file, args.verbose)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    where = "in this process" if trial_options is None else (
        f"{trial_options.workers} at a time in trial processes ({trial_options.platform} training service)"
    )
    print(
        f"Search {search_id}: {settings.strategy}, {settings.trials} trials"
        f"{', time budget ' + format_duration(settings.time_budget) if settings.time_budget else ''}, "
        f"target {format_flops(settings.target_flops)} FLOPs at {settings.resolution}px "
        f"({FLOPS_CONVENTION}). Data: {data.describe()}. Training {where}. Database: {describe_url(db_url)}. "
        f"NNI log: {log_file}",
        file=sys.stderr,
    )
    cores = os.cpu_count() or 1
    local_trials = trial_options is not None and trial_options.platform == "local"
    if local_trials and settings.threads * trial_options.workers > cores:
        print(f"note: each trial trains with {settings.threads} threads (stored with the search, since results depend "
              f"on it): {trial_options.workers} workers oversubscribe the {cores} cores here", file=sys.stderr)
    started = time.monotonic()
    runner = SearchRunner(factory, search_id, settings, data)
    display = ProgressDisplay(settings, runner.elapsed)
    runner.events = display

    def announce(experiment_id: str, port: int, log_folder: Path) -> None:
        address = "127.0.0.1" if trial_options.platform == "local" else "all interfaces"
        display.note(f"NNI manager: experiment {experiment_id}, port {port} on {address}; trial logs under "
                     f"{log_folder.parent}")

    def explore(active: SearchRunner) -> None:
        strategy = make_strategy(settings.strategy, settings.seed, settings.trials, active.space.size())
        if trial_options is None:
            run_strategy(active.space, strategy, active.evaluate_sample, active.budget_available)
            return
        try:
            run_strategy_on_trial_processes(
                active.space, strategy, active, absolute_url(db_url), search_id, trial_options, on_start=announce
            )
        except BaseException:
            active.abandon_in_flight()
            raise

    try:
        runner.run(explore, reference_here=trial_options is None)
    except KeyboardInterrupt:
        display.close()
        print(
            f"\nInterrupted. Every finished trial is saved; continue with: python -m nas.search --resume {search_id}"
            f"{' --db ' + db_url if db_url != 'sqlite:///effnas.db' else ''}",
            file=sys.stderr,
        )
        return 130
    except DatabaseError as exc:
        fail(str(exc), code=1)
    finally:
        display.close()
    print(_summary(factory, search_id, settings, data, db_url, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
