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
import sys
from dataclasses import replace
from pathlib import Path

import effnas.cli as cli
from db import Database, db_argument, open_database, resolve_url
from effnas.cli import CommandParser, UsageError, add_db_option, command, fail
from effnas.records import TrainingRun
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from nas.training.config import DATASETS, DEVICES, FLIP_DATASETS, TrainingRecipe
from scaling.baseline import BASELINE_OPTIONS, add_baseline_options
from scaling.launcher import launch
from scaling.training_queue import TrainOptions, build_queue, rank_jobs, resume_jobs
from scaling.training_run import Job, JobStopped, run_queue

FORMATS = ("table", "json")
RUNS_DIR = Path(".effnas") / "training"
DEFAULT_MAX_FLOPS = "2G"
DEFAULT_VAL_IMAGES = 5000


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="python -m scaling.train",
        description="Train a found baseline or a family's members to the end: test accuracy, curves, weights. "
        f"{FLOPS_CONVENTION}, counted at the training resolution.",
    )
    what = parser.add_argument_group("what to train (one of)")
    add_baseline_options(what)
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
    recipe.add_argument("--lr", type=cli.finite_float, default=defaults.lr, help=f"peak learning rate, SGD ({defaults.lr})")
    recipe.add_argument("--weight-decay", type=cli.finite_float, default=defaults.weight_decay,
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


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The command's options, checked: UsageError names the first that is wrong."""
    for flag, value, minimum in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                                 ("--threads", args.threads, 1), ("--val-images", args.val_images, 1),
                                 ("--subset", args.subset, 10), ("--resolution", args.resolution, 32)):
        cli.at_least(flag, value, minimum)
    if args.lr <= 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.weight_decay < 0:
        raise UsageError(f"--weight-decay must be 0 or more, got {args.weight_decay}")
    return TrainOptions(
        dataset=args.dataset, db_url=resolve_url(args.db), seeds=cli.parse_seeds(args.seeds),
        max_flops=cli.parse_flops(args.max_flops), out_dir=Path(args.out_dir), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        **{name: getattr(args, name) for name in (*BASELINE_OPTIONS, "pick", "family", "members", "resume", "data_dir",
                                                  "test_dir", "resolution", "subset", "val_images", "flip", "device",
                                                  "threads", "format")})


def results_table(runs: list[TrainingRun]) -> str:
    lines = [f"{FLOPS_CONVENTION}, counted at each network's training resolution. Accuracy: trained, on the "
             "test split (chosen on the validation split).", "",
             f"{'run':>4}  {'network':28}{'seed':>5}{'res':>5}{'params':>9}{'FLOPs':>9}{'test acc':>10}{'val acc':>9}"
             f"{'epochs':>8}{'time':>9}"]
    for run in runs:
        lines.append(f"{run.id:>4}  {run.label[:27]:28}{run.recipe['seed']:>5}{run.resolution:>5}"
                     f"{format_params(run.params):>9}{format_flops(run.flops):>9}{run.test_accuracy:>10.4f}"
                     f"{run.val_accuracy:>9.4f}{run.epochs_done:>8}{cli.format_duration(run.seconds or 0):>9}")
    return "\n".join(lines)


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    if args.nproc is not None:
        return launch(args.nproc, parser.argv, parser.prog)
    options = options_from_args(args)
    with contextlib.ExitStack() as memory_cap:
        return _train(options, parser, memory_cap)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _raise_job_stopped(signum, frame):
    raise JobStopped


def _train(options: TrainOptions, parser: CommandParser, memory_cap: contextlib.ExitStack) -> int:
    from nas.training.config import resolve_device
    from nas.training.distributed import from_environment, leave
    from nas.training.memory import is_out_of_memory

    parallel = from_environment(resolve_device(options.device))
    if parallel is not None:
        options = replace(options, processes=parallel.world_size,
                          threads=options.threads or max(1, (os.cpu_count() or 1) // parallel.local_world_size))
    try:
        if parallel is None or parallel.is_main:
            db, jobs, finished = _prepare(options, memory_cap)
        if parallel is not None:
            shared = parallel.share([(j.run_id, j.resume, str(j.out_dir), j.epochs_done) for j in jobs]
                                    if parallel.is_main else None)
            if not parallel.is_main:
                db, jobs, finished = rank_jobs(options, shared)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        fail(f"ran out of memory loading the data at --resolution {options.resolution or 'of the network'}", code=1,
             prog=parser.prog)
    main_rank = parallel is None or parallel.is_main
    if finished and main_rank:
        rest = "training the rest" if jobs else "nothing left to train"
        print(f"{len(finished)} of {len(finished) + len(jobs)} runs already complete (runs "
              f"{', '.join(str(run.id) for run in finished)}); {rest}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt if parallel is None else _raise_job_stopped)
    try:
        code = run_queue(db, jobs, finished, parallel, parser.prog, lambda job: _again(options, parser.argv, job))
    finally:
        leave()
    # An interrupted queue, or a data-parallel one stopped by a failure, has said what happened instead.
    if main_rank and code != 130 and not (parallel is not None and code):
        _print_results(finished, options.format)
    return code


def _prepare(options: TrainOptions,
             memory_cap: contextlib.ExitStack) -> tuple[Database, list[Job], list[TrainingRun]]:
    """The database, the runs to train or continue, and the runs of this queue already complete."""
    from nas.training.config import resolve_device
    from nas.training.memory import cpu_memory_limit

    # CUDA reserves far more address space than it uses: the cap is for CPU training only.
    if resolve_device(options.device) == "cpu":
        memory_cap.enter_context(cpu_memory_limit())
    if options.resume is not None:
        db = open_database(options.db_url, create=False, migrate=True)
        return db, resume_jobs(db, options), []
    return build_queue(options)


def _print_results(finished: list[TrainingRun], format: str) -> None:
    if format == "json":
        print(json.dumps([run.to_json() for run in finished], indent=2))
    elif finished:
        print(results_table(finished))


def _again(options: TrainOptions, argv: list[str], job: Job) -> str:
    if options.resume is not None:
        return f"python -m scaling.train --resume {job.run_id}{db_argument(options.db_url)}"
    launcher = "torchrun --nproc-per-node N -m scaling.train" if "WORLD_SIZE" in os.environ else "python -m scaling.train"
    return f"{launcher} {shlex.join(argv)}"


if __name__ == "__main__":
    sys.exit(main())
