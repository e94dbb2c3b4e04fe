"""`python -m scaling.train --search ID` (or `--family ID [--members B0,B1] [--seeds 0,1]`): train networks to
the end, as one queue of runs (each network with each seed).

Each network is trained from scratch on the full training split at its own resolution with the final recipe of
`nas.training.config.TrainingRecipe`, its weights chosen on a validation split carved from the training files,
and scored once on the test split. Every epoch ends with a checkpoint and a point on the stored curve. The same
command run again (after Ctrl-C or a killed process) skips the runs it finished, continues the interrupted one
from its checkpoint and never stores a run twice; `--resume RUN_ID` continues one run. The chosen weights are
written to a file whose SHA-256 is stored with the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import Database, DatabaseError, db_argument, open_database, resolve_url, training
from db.families import get_family
from effnas.cli import (
    CommandParser,
    UsageError,
    add_db_option,
    fail,
    finite_float,
    format_duration,
    parse_flops,
    parse_seeds,
)
from effnas.records import TrainingRun, TrainingStatus
from nas.space.flops import FLOPS_CONVENTION, count_flops, count_params, format_flops, format_params
from nas.space.spec import ArchSpec, spec_from_dict, spec_to_dict
from nas.training.config import DATASETS, DEVICES, FLIP_DATASETS, DataError, TaskConfig, TrainingRecipe
from scaling.baseline import BASELINE_OPTIONS, resolve_baseline
from scaling.compound import fitted_resolution

FORMATS = ("table", "json")
RUNS_DIR = Path(".effnas") / "training"
DEFAULT_MAX_FLOPS = "2G"
DEFAULT_VAL_IMAGES = 5000
PEER_LOST_MARKS = ("gloo", "NCCL", "Connection closed by peer", "Connection reset by peer")

if TYPE_CHECKING:
    from nas.training.data import TaskData
    from nas.training.distributed import Distributed


@dataclass(frozen=True, eq=False)
class Job:
    """A stored run and everything needed to train it."""

    run_id: int
    spec: ArchSpec
    data: TaskData
    recipe: TrainingRecipe
    label: str
    resume: bool
    out_dir: Path
    epochs_done: int = 0

    @property
    def epoch_work(self) -> float:
        """What one epoch costs, in FLOPs x training images (time left is estimated from it)."""
        return float(count_flops(self.spec)) * len(self.data.train)


@dataclass(frozen=True)
class Target:
    """One network to train: a family member or a baseline."""

    label: str
    spec: ArchSpec
    family_id: int | None = None
    member: str | None = None
    trial_id: int | None = None


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="python -m scaling.train",
        description="Train a found baseline or a family's members to the end: test accuracy, curves, weights. "
        f"{FLOPS_CONVENTION}, counted at the training resolution.",
    )
    what = parser.add_argument_group("what to train (one of)")
    what.add_argument("--search", type=int, metavar="ID", help="the best trial of search ID")
    what.add_argument("--trial", type=int, metavar="ID", help="trial ID (its database id)")
    what.add_argument("--arch", metavar="FILE.json", help="an architecture spec file (effnas JSON format)")
    what.add_argument("--baseline", metavar="NAME", help="an official network by name, e.g. efficientnet-b0")
    what.add_argument("--family", type=int, metavar="ID", help="the members of family ID (from scaling.grow)")
    what.add_argument("--members", metavar="B0,B1,...", help="with --family: only these members (default: all "
                      "under --max-flops)")
    what.add_argument("--resume", type=int, metavar="RUN_ID", help="continue a stopped training run")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="fashion-mnist",
                      help="data set with a test split (fashion-mnist)")
    data.add_argument("--data-dir", help="folder of the data set (idx, cifar10, imagefolder; fashion-mnist optional)")
    data.add_argument("--test-dir", help="imagefolder: the test images' folder (default DATA_DIR/test)")
    data.add_argument("--resolution", type=int,
                      help="training resolution of a single network, or of B0 with the members scaled from it "
                      "(default: the network's own)")
    data.add_argument("--subset", type=int, help="train on only the first N training images (a quick run)")
    data.add_argument("--val-images", type=int, default=DEFAULT_VAL_IMAGES,
                      help=f"validation images held out of the training files ({DEFAULT_VAL_IMAGES})")
    recipe = parser.add_argument_group("recipe")
    defaults = TrainingRecipe()
    recipe.add_argument("--epochs", type=int, default=defaults.epochs, help=f"epochs ({defaults.epochs})")
    recipe.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"batch size ({defaults.batch_size})")
    recipe.add_argument("--lr", type=finite_float, default=defaults.lr, help=f"peak learning rate, SGD ({defaults.lr})")
    recipe.add_argument("--weight-decay", type=finite_float, default=defaults.weight_decay,
                        help=f"weight decay of conv and linear weights, not BatchNorm or biases ({defaults.weight_decay})")
    recipe.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help=f"random horizontal flips (default: on for {', '.join(FLIP_DATASETS)})")
    recipe.add_argument("--seeds", default=str(defaults.seed),
                        help=f"train each network once per seed, e.g. 0,1,2 ({defaults.seed})")
    run = parser.add_argument_group("where and how")
    run.add_argument("--device", choices=DEVICES, default="auto", help="auto: a GPU when there is one (auto)")
    run.add_argument("--threads", type=int, help="CPU threads per process (default: all cores, shared by the processes)")
    run.add_argument("--nproc", type=int, metavar="N",
                     help="train data-parallel in N processes on this machine (the same as torchrun "
                     "--nproc-per-node N -m scaling.train ...; one GPU each where there are GPUs)")
    run.add_argument("--max-flops", default=DEFAULT_MAX_FLOPS,
                     help=f"refuse networks above this many FLOPs at their training resolution ({DEFAULT_MAX_FLOPS})")
    run.add_argument("--out-dir", default=str(RUNS_DIR), help=f"checkpoints and weights go under here ({RUNS_DIR})")
    run.add_argument("--format", choices=FORMATS, default="table", help="print the results as a table or JSON")
    add_db_option(run)
    return parser


def resolve_targets(args: argparse.Namespace, db_url: str) -> list[Target]:
    """The networks to train, each at its training resolution; UsageError names what is wrong."""
    chosen = [flag for flag in (*BASELINE_OPTIONS, "family") if getattr(args, flag) is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --search ID, --trial ID, --arch FILE.json, --baseline NAME, "
                         "--family ID (or --resume RUN_ID)")
    if args.members and args.family is None:
        raise UsageError("--members goes with --family")
    if args.family is None:
        baseline, _ = resolve_baseline(args, db_url)
        spec = baseline.spec if args.resolution is None else replace(baseline.spec, resolution=args.resolution)
        return [Target(baseline.ref, spec, trial_id=baseline.trial_id)]
    family = get_family(open_database(db_url, create=False), args.family)
    if family is None:
        raise UsageError(f"no family with id {args.family}")
    members = family.members
    if args.members:
        wanted = [name.strip().upper() for name in args.members.split(",") if name.strip()]
        known = {m.name.upper(): m for m in members}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise UsageError(f"family {args.family} has no member {', '.join(unknown)}; it has "
                             f"{', '.join(m.name for m in members)}")
        members = [known[name] for name in wanted]
    targets = []
    base = replace(spec_from_dict(family.baseline_arch), resolution=args.resolution or family.base_resolution)
    for member in members:
        spec = spec_from_dict(member.arch)
        if args.resolution is not None:
            # At another base the member keeps the FLOPs ratio to B0 it was grown with.
            spec = replace(spec, resolution=fitted_resolution(base, member.width, member.depth,
                                                              member.resolution_mult, member.flops_ratio))
        targets.append(Target(f"{member.name} of family {args.family}", spec, args.family, member.name))
    return targets


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--threads", args.threads),
                        ("--val-images", args.val_images)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.subset is not None and args.subset < 10:
        raise UsageError(f"--subset must be at least 10, got {args.subset}")
    if args.resolution is not None and args.resolution < 32:
        raise UsageError(f"--resolution must be at least 32, got {args.resolution}")
    if args.lr <= 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.weight_decay < 0:
        raise UsageError(f"--weight-decay must be 0 or more, got {args.weight_decay}")
    args.seeds = parse_seeds(args.seeds)


@dataclass
class QueueDisplay:
    """Where a queue of runs stands. On a terminal a bar per epoch (steps, loss); wherever the output goes a line
    per epoch: run k of n, network and seed, epoch, loss, validation accuracy, images/s, and the time left for the
    run and for the whole queue (from this process's seconds per FLOP x image so far)."""

    jobs: list[Job]
    silent: bool = False
    index: int = 0
    done: int = 0
    bar: Any = None
    seconds: float = 0.0
    work: float = 0.0
    remaining: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.remaining = {job.run_id: job.recipe.epochs - job.epochs_done for job in self.jobs}

    @property
    def job(self) -> Job:
        return self.jobs[self.index]

    def label(self) -> str:
        return f"[{self.index + 1}/{len(self.jobs)}] {self.job.label}, seed {self.job.recipe.seed}"

    def start(self, index: int, epochs_done: int) -> None:
        self.index = index
        self.done = epochs_done
        self.remaining[self.job.run_id] = self.job.recipe.epochs - epochs_done

    def step(self, step: int, steps: int, loss: float) -> None:
        if self.silent or not sys.stderr.isatty():
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, file=sys.stderr, dynamic_ncols=True, leave=False, unit="step",
                            desc=f"{self.label()}: epoch {self.done + 1}/{self.job.recipe.epochs}")
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix_str(f"loss {loss:.3f}")

    def time_left(self, jobs: list[Job]) -> str:
        if not self.work:
            return "?"
        rate = self.seconds / self.work
        return format_duration(sum(rate * self.remaining[job.run_id] * job.epoch_work for job in jobs))

    def epoch(self, point: dict[str, Any], done: int) -> None:
        self.close()
        self.done = done
        self.seconds += point["seconds"]
        self.work += self.job.epoch_work
        self.remaining[self.job.run_id] = self.job.recipe.epochs - done
        if self.silent:
            return
        queue = f", ~{self.time_left(self.jobs)} left in the queue" if len(self.jobs) > 1 else ""
        print(f"{self.label()}: epoch {done}/{self.job.recipe.epochs}, loss {point['loss']:.4f}, validation accuracy "
              f"{point['val_accuracy']:.4f} (EMA {point['val_accuracy_ema']:.4f}), "
              f"{point['images_per_second']:.0f} images/s, ~{self.time_left([self.job])} left for this run{queue}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def train_run(db: Database, job: Job, run_dir: Path, display: QueueDisplay,
              parallel: Distributed | None = None) -> TrainingRun:
    """Train (or continue) a run to its last epoch, checkpointing each; return the stored run. In a data-parallel
    job every rank trains and evaluates; rank 0 alone writes the checkpoint, the curve, the weights and the row."""
    from nas.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
    from nas.training.engine import Trainer
    from nas.training.weights import TrainedWeights

    writes = parallel is None or parallel.is_main
    run_id, data, recipe = job.run_id, job.data, job.recipe
    trainer = Trainer(job.spec, data, recipe, parallel)
    checkpoint = run_dir / CHECKPOINT_NAME
    curve = list(training.get_run(db, run_id).curve)
    if job.resume and checkpoint.is_file():
        state, stored_curve = load_checkpoint(checkpoint, trainer.device)
        trainer.load_state(state)
        # A process killed between writing the checkpoint and storing its epoch left the point in the checkpoint.
        for point in stored_curve[len(curve):] if writes else []:
            training.record_epoch(db, run_id, point, str(checkpoint))
        curve = stored_curve
    display.start(display.jobs.index(job), trainer.epoch)
    started = time.monotonic() - sum(point["seconds"] for point in curve)
    try:
        while trainer.epoch < recipe.epochs:
            point = {**trainer.fit_epoch(display.step).point(),
                     "processes": parallel.world_size if parallel is not None else 1}
            curve.append(point)
            if writes:
                save_checkpoint(checkpoint, trainer.state(), curve)
                training.record_epoch(db, run_id, point, str(checkpoint))
            display.epoch(point, trainer.epoch)
    finally:
        display.close()
    test_accuracy = trainer.test_accuracy()
    if writes:
        weights = run_dir / "weights.pt"
        sha256 = TrainedWeights(trainer.spec, trainer.best["state"], data.mean, data.std, data.classes, run_id,
                                trainer.best["weights"], trainer.best["epoch"]).save(weights)
        training.end_run(
            db, run_id, TrainingStatus.COMPLETE, best_epoch=trainer.best["epoch"],
            chosen_weights=trainer.best["weights"], val_accuracy=trainer.best["accuracy"],
            test_accuracy=test_accuracy, seconds=time.monotonic() - started, weights_path=str(weights.resolve()),
            weights_sha256=sha256,
        )
    if parallel is not None:
        parallel.barrier()  # the row is complete before any rank reads it
    return training.get_run(db, run_id)


def results_table(runs: list[TrainingRun]) -> str:
    lines = [f"{FLOPS_CONVENTION}, counted at each network's training resolution. Accuracy: trained, on the "
             "test split (chosen on the validation split).", "",
             f"{'run':>4}  {'network':28}{'seed':>5}{'res':>5}{'params':>9}{'FLOPs':>9}{'test acc':>10}{'val acc':>9}"
             f"{'epochs':>8}{'time':>9}"]
    for run in runs:
        lines.append(f"{run.id:>4}  {run.label[:27]:28}{run.recipe['seed']:>5}{run.resolution:>5}"
                     f"{format_params(run.params):>9}{format_flops(run.flops):>9}{run.test_accuracy:>10.4f}"
                     f"{run.val_accuracy:>9.4f}{run.epochs_done:>8}{format_duration(run.seconds or 0):>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.nproc is not None:
        return _launch(args, parser, argv)
    with contextlib.ExitStack() as memory_cap:
        return _train(args, parser, memory_cap, argv)


def _launch(args: argparse.Namespace, parser: CommandParser, argv: list[str]) -> int:
    """`--nproc N`: start this command in N processes with PyTorch's elastic launcher (what torchrun runs); a
    rank that dies stops the others, and is reported in one line."""
    import logging
    import socket as sockets

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if args.nproc < 1:
        fail(f"--nproc must be at least 1, got {args.nproc}", prog=parser.prog)
    if "WORLD_SIZE" in os.environ:
        fail("--nproc starts the processes itself; under torchrun leave it out", prog=parser.prog)
    # The launcher logs each rank's exit at error level; the one line below says the same.
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc, run_id=f"effnas-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{port}", max_restarts=0,
                          monitor_interval=0.5, start_method="spawn")
    rest = [part for index, part in enumerate(argv) if part != "--nproc" and (index == 0 or argv[index - 1] != "--nproc")
            and not part.startswith("--nproc=")]
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "scaling.train", *rest)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = f"signal {-failure.exitcode}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        print(f"{parser.prog}: error: rank {rank} of {args.nproc} ended with {how}; the other ranks were stopped. Every "
              "finished epoch is in the last checkpoint: run the same command again to continue.", file=sys.stderr)
        return 130 if failure.exitcode == 130 else 1
    except KeyboardInterrupt:
        return 130
    return 0


def _prepare(args: argparse.Namespace, memory_cap: contextlib.ExitStack,
             db_url: str) -> tuple[Database, list[Job], list[TrainingRun]]:
    """The database, the runs to train or continue, and the runs of this queue already complete."""
    _check_numbers(args)
    max_flops = parse_flops(args.max_flops)
    from nas.training.data import resolve_device
    from nas.training.memory import cpu_memory_limit

    # CUDA reserves far more address space than it uses: the cap is for CPU training only.
    if resolve_device(args.device) == "cpu":
        memory_cap.enter_context(cpu_memory_limit())
    if args.resume is not None:
        db = open_database(db_url, create=False, migrate=True)
        return db, _resume_job(db, args), []
    return _queue(args, db_url, max_flops)


def _train(args: argparse.Namespace, parser: CommandParser, memory_cap: contextlib.ExitStack,
           argv: list[str]) -> int:
    from nas.training.data import resolve_device
    from nas.training.distributed import from_environment, leave
    from nas.training.memory import is_out_of_memory

    db_url = resolve_url(args.db)
    parallel = from_environment(resolve_device(args.device))
    args.processes = parallel.world_size if parallel is not None else 1
    if parallel is not None and args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // parallel.local_world_size)
    try:
        if parallel is None or parallel.is_main:
            db, jobs, finished = _prepare(args, memory_cap, db_url)
        if parallel is not None:
            shared = parallel.share([(j.run_id, j.resume, str(j.out_dir), j.epochs_done) for j in jobs]
                                    if parallel.is_main else None)
            if not parallel.is_main:
                db, jobs, finished = _rank_jobs(args, db_url, shared)
    except (UsageError, DataError, DatabaseError) as exc:
        fail(str(exc), prog=parser.prog)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        fail(f"ran out of memory loading the data at --resolution {args.resolution or 'of the network'}", code=1,
             prog=parser.prog)
    main_rank = parallel is None or parallel.is_main
    if finished and main_rank:
        rest = "training the rest" if jobs else "nothing left to train"
        print(f"{len(finished)} of {len(finished) + len(jobs)} runs already complete (runs "
              f"{', '.join(str(run.id) for run in finished)}); {rest}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = _run_queue(db, jobs, finished, args, parser, argv, parallel)
    finally:
        leave()
    return code


def _run_queue(db: Database, jobs: list[Job], finished: list[TrainingRun], args: argparse.Namespace,
               parser: CommandParser, argv: list[str], parallel: Distributed | None) -> int:
    """Train the queue; a failed run is stored and the queue goes on (a data-parallel job stops instead, since
    every rank must stay in step)."""
    main_rank = parallel is None or parallel.is_main
    display = QueueDisplay(jobs, silent=not main_rank)
    failures = []
    for job in jobs:
        try:
            finished.append(_run_job(db, job, display, parallel))
        except KeyboardInterrupt:
            display.close()
            if main_rank:
                training.end_run(db, job.run_id, TrainingStatus.INTERRUPTED, error="interrupted (Ctrl-C or SIGTERM)")
                print(f"\nInterrupted. Every finished epoch is saved; to continue, run the same command again: "
                      f"{_again(args, argv, job)}", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - stored with the run, then one line for the user
            display.close()
            if parallel is not None and _peer_lost(exc):
                if main_rank:
                    training.end_run(db, job.run_id, TrainingStatus.INTERRUPTED,
                                     error="another process of the data-parallel job stopped")
                return 1
            message = _failure_line(exc, job)
            if main_rank:
                training.end_run(db, job.run_id, TrainingStatus.FAILED, error=message)
            print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
            if parallel is not None:
                return 1
            failures.append(message)
    if not main_rank:
        return 0
    finished.sort(key=lambda run: run.id)
    if args.format == "json":
        print(json.dumps([run.to_json() for run in finished], indent=2))
    elif finished:
        print(results_table(finished))
    return 1 if failures else 0


def _peer_lost(exc: Exception) -> bool:
    """Whether a collective failed because another rank of the job is gone (its own failure is reported by it)."""
    import torch.distributed

    # Gloo reports a vanished peer as a plain RuntimeError from inside the backward pass.
    text = str(exc)
    return isinstance(exc, torch.distributed.DistError) or (
        isinstance(exc, RuntimeError) and any(mark in text for mark in PEER_LOST_MARKS))


def _again(args: argparse.Namespace, argv: list[str], job: Job) -> str:
    if args.resume is not None:
        return f"python -m scaling.train --resume {job.run_id}{db_argument(resolve_url(args.db))}"
    launcher = "torchrun --nproc-per-node N -m scaling.train" if "WORLD_SIZE" in os.environ else "python -m scaling.train"
    return f"{launcher} {shlex.join(argv)}"


def _rank_jobs(args: argparse.Namespace, db_url: str,
               shared: list[tuple[int, bool, str, int]]) -> tuple[Database, list[Job], list[TrainingRun]]:
    """Another rank's copy of rank 0's queue: the same runs, read from the database, with the data loaded here."""
    db = open_database(db_url, create=False)
    cache: dict[tuple, TaskData] = {}
    jobs = []
    for run_id, resume, out_dir, epochs_done in shared:
        run = training.get_run(db, run_id)
        jobs.append(Job(run.id, spec_from_dict(run.arch), _stored_data(run, args.device, cache),
                        TrainingRecipe(**run.recipe), run.label, resume, Path(out_dir), epochs_done))
    return db, jobs, []


def _stored_data(run: TrainingRun, device: str, cache: dict[tuple, TaskData] | None = None) -> TaskData:
    """The data a stored run trains on, as its row describes it."""
    from nas.training.data import load_task_data

    stored = run.data
    key = tuple(stored.get(name) for name in ("dataset", "data_dir", "subset", "val_images", "resolution",
                                              "test_dir", "threads"))
    if cache is not None and key in cache:
        return cache[key]
    task = TaskConfig(dataset=stored["dataset"], data_dir=stored["data_dir"], threads=stored["threads"],
                      device=device)
    data = load_task_data(task, stored["resolution"], subset=stored["subset"], val_images=stored["val_images"],
                          test=True, test_dir=stored["test_dir"])
    if cache is not None:
        cache[key] = data
    return data


def _failure_line(exc: Exception, job: Job) -> str:
    from nas.training.memory import is_out_of_memory

    if is_out_of_memory(exc):
        data = job.data
        where = "device" if data.device.type == "cuda" else "CPU"
        return (f"run {job.run_id} ran out of {where} memory training at {data.resolution} px, batch size "
                f"{job.recipe.batch_size}, on {len(data.train):,} training images; start it again with a smaller "
                "--batch-size (or a smaller --resolution)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"run {job.run_id} failed: {text}"


def _task(args: argparse.Namespace) -> TaskConfig:
    return TaskConfig(dataset=args.dataset, data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
                      threads=args.threads or os.cpu_count() or 1, device=args.device)


def _trainable(targets: list[Target], args: argparse.Namespace, max_flops: int) -> list[Target]:
    """The targets under --max-flops; a named network over it is a usage error, a family's big members are skipped."""
    flops = {id(t): count_flops(t.spec) for t in targets}
    over = [(t, flops[id(t)]) for t in targets if flops[id(t)] > max_flops]
    if over and not (args.family is not None and args.members is None):
        target, flops = over[0]
        raise UsageError(f"{target.label} counts {format_flops(flops)} FLOPs at {target.spec.resolution}px, over "
                         f"--max-flops {format_flops(max_flops)}")
    targets = [t for t in targets if flops[id(t)] <= max_flops]
    if not targets:
        raise UsageError(f"every member is over --max-flops {format_flops(max_flops)}")
    if over:
        print(f"not training {', '.join(t.member for t, _ in over)}: over --max-flops {format_flops(max_flops)} at "
              "their resolution (name them with --members and raise --max-flops to train them)", file=sys.stderr)
    return targets


def _queue(args: argparse.Namespace, db_url: str,
           max_flops: int) -> tuple[Database, list[Job], list[TrainingRun]]:
    """Every target with every seed. Targets are checked and the data loaded before the database is opened for
    writing; a run this command stored before is continued (or, complete, reported) instead of stored again."""
    from nas.training.data import load_task_data

    targets = _trainable(resolve_targets(args, db_url), args, max_flops)
    task = _task(args)
    base = TrainingRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                          flip=args.flip if args.flip is not None else args.dataset in FLIP_DATASETS)
    data_by_resolution = {}
    for target in targets:
        if target.spec.resolution not in data_by_resolution:
            data_by_resolution[target.spec.resolution] = load_task_data(
                task, target.spec.resolution, subset=args.subset, val_images=args.val_images, test=True,
                test_dir=args.test_dir)
    db = open_database(db_url)
    jobs, finished = [], []
    for target in targets:
        data = data_by_resolution[target.spec.resolution]
        for seed in args.seeds:
            recipe = replace(base, seed=seed)
            stored = _stored_run(db, args, target, data, recipe, task)
            if stored is None:
                jobs.append(_store_job(db, args, target, data, recipe, task))
            elif stored.status is TrainingStatus.COMPLETE:
                finished.append(stored)
            else:
                jobs.append(_continue_job(db, stored, target.spec, data, recipe, Path(args.out_dir)))
    return db, jobs, finished


def _data_config(task: TaskConfig, args: argparse.Namespace, resolution: int) -> dict[str, Any]:
    return {"dataset": task.dataset, "data_dir": task.data_dir, "test_dir": args.test_dir,
            "val_images": args.val_images, "subset": args.subset, "resolution": resolution, "threads": task.threads,
            "processes": args.processes}


def _stored_run(db: Database, args: argparse.Namespace, target: Target, data: TaskData, recipe: TrainingRecipe,
                task: TaskConfig) -> TrainingRun | None:
    """The run of this network, data and recipe (seed included) that an earlier command stored, if any; the
    complete one where there are several."""
    from nas.training.engine import trained_spec

    arch = spec_to_dict(trained_spec(target.spec, data, recipe))
    wanted = _data_config(task, args, target.spec.resolution)
    runs = [run for run in training.list_runs(db, family_id=target.family_id, recipe_key=recipe.key())
            if run.arch == arch and {"processes": 1, **run.data} == wanted
            and (run.family_id, run.member, run.trial_id) == (target.family_id, target.member, target.trial_id)]
    if not runs:
        return None
    return max(runs, key=lambda run: (run.status is TrainingStatus.COMPLETE, run.id))


def _this_host_pid(worker: str | None) -> int | None:
    host, _, pid = (worker or "").rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _continue_job(db: Database, run: TrainingRun, spec: ArchSpec, data: TaskData, recipe: TrainingRecipe,
                  out_dir: Path) -> Job:
    """Take over a stopped run: interrupted, failed, or left running by a process that no longer exists."""
    pid = _this_host_pid(run.worker)
    if run.status is TrainingStatus.RUNNING and pid is not None and pid != os.getpid() and _alive(pid):
        raise UsageError(f"training run {run.id} ({run.label}, seed {recipe.seed}) is being trained right now by "
                         f"process {pid}; wait for it or stop it")
    if run.epochs_done and not (run.checkpoint_path and Path(run.checkpoint_path).is_file()):
        raise UsageError(f"the checkpoint of run {run.id} is gone ({run.checkpoint_path})")
    training.resume_run(db, run.id, f"{socket.gethostname()}:{os.getpid()}")
    print(f"Training run {run.id}: {run.label}, seed {recipe.seed}, continuing after epoch {run.epochs_done}",
          file=sys.stderr, flush=True)
    if run.checkpoint_path:
        out_dir = Path(run.checkpoint_path).parent.parent
    return Job(run.id, spec, data, recipe, run.label, True, out_dir, run.epochs_done)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _store_job(db: Database, args: argparse.Namespace, target: Target, data: TaskData, recipe: TrainingRecipe,
               task: TaskConfig) -> Job:
    from nas.training.engine import trained_spec

    spec = trained_spec(target.spec, data, recipe)
    device = data.device.type
    run_id = training.create_run(db, TrainingRun(
        label=target.label, arch=spec_to_dict(spec), block_strings=" ".join(spec.block_strings()),
        dataset=task.dataset, data=_data_config(task, args, spec.resolution), recipe=recipe.to_dict(),
        recipe_key=recipe.key(), device=device, resolution=spec.resolution, flops=count_flops(spec),
        params=count_params(spec), worker=f"{socket.gethostname()}:{os.getpid()}", family_id=target.family_id,
        member=target.member, trial_id=target.trial_id,
    ))
    print(f"Training run {run_id}: {target.label}, seed {recipe.seed}, {format_flops(count_flops(spec))} FLOPs at "
          f"{spec.resolution}px, {format_params(count_params(spec))} params, {recipe.epochs} epochs on "
          f"{data.describe()}, {device}", file=sys.stderr, flush=True)
    return Job(run_id, target.spec, data, recipe, target.label, False, Path(args.out_dir))


def _resume_job(db: Database, args: argparse.Namespace) -> list[Job]:
    run = training.get_run(db, args.resume)
    if run is None:
        raise UsageError(f"no training run with id {args.resume} in {db.shown_url}")
    if run.status is TrainingStatus.COMPLETE:
        raise UsageError(f"training run {run.id} is already complete (test accuracy {run.test_accuracy:.4f})")
    data = _stored_data(run, args.device)
    return [_continue_job(db, run, spec_from_dict(run.arch), data, TrainingRecipe(**run.recipe), Path(args.out_dir))]


def _run_job(db: Database, job: Job, display: QueueDisplay, parallel: Distributed | None) -> TrainingRun:
    run_dir = (job.out_dir / f"run-{job.run_id}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return train_run(db, job, run_dir, display, parallel)


if __name__ == "__main__":
    sys.exit(main())
