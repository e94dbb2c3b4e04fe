"""What `scaling.train` trains: its options, the networks they name, and the queue of stored runs (each network
with each seed) built from them, continuing a run an earlier command stored instead of storing it twice."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import Database, open_database, training
from db.families import get_family
from effnas.cli import UsageError
from effnas.records import TrainingRun, TrainingStatus
from nas.space.flops import count_flops, count_params, format_flops, format_params
from nas.space.spec import ArchSpec, spec_from_dict, spec_to_dict
from nas.training.checkpoint import CHECKPOINT_NAME
from nas.training.config import FLIP_DATASETS, TaskConfig, TrainingRecipe
from scaling.baseline import BASELINE_OPTIONS, resolve_baseline
from scaling.compound import fitted_resolution
from scaling.training_run import Job

if TYPE_CHECKING:
    from nas.training.data import TaskData


@dataclass(frozen=True)
class TrainOptions:
    """Everything `scaling.train` was asked for, read and checked once: what to train (one of `search`, `trial`,
    `arch`, `baseline`, `family` with `members`, or `resume`), on which data, with which recipe and seeds, where."""

    dataset: str
    db_url: str
    seeds: tuple[int, ...]
    max_flops: int
    out_dir: Path
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    search: int | None = None
    pick: str = "reward"
    trial: int | None = None
    arch: str | None = None
    baseline: str | None = None
    family: int | None = None
    members: str | None = None
    resume: int | None = None
    data_dir: str | None = None
    test_dir: str | None = None
    resolution: int | None = None
    subset: int | None = None
    val_images: int = 5000
    flip: bool | None = None
    device: str = "auto"
    threads: int | None = None
    processes: int = 1
    format: str = "table"


@dataclass(frozen=True)
class Target:
    """One network to train: a family member or a baseline."""

    label: str
    spec: ArchSpec
    family_id: int | None = None
    member: str | None = None
    trial_id: int | None = None


def resolve_targets(options: TrainOptions) -> list[Target]:
    """The networks to train, each at its training resolution; UsageError names what is wrong."""
    chosen = [flag for flag in (*BASELINE_OPTIONS, "family") if getattr(options, flag) is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --search ID, --trial ID, --arch FILE.json, --baseline NAME, "
                         "--family ID (or --resume RUN_ID)")
    if options.members and options.family is None:
        raise UsageError("--members goes with --family")
    if options.family is None:
        baseline, _ = resolve_baseline(options, options.db_url)
        spec = baseline.spec if options.resolution is None else replace(baseline.spec, resolution=options.resolution)
        return [Target(baseline.ref, spec, trial_id=baseline.trial_id)]
    family = get_family(open_database(options.db_url, create=False), options.family)
    if family is None:
        raise UsageError(f"no family with id {options.family}")
    members = family.members
    if options.members:
        wanted = [name.strip().upper() for name in options.members.split(",") if name.strip()]
        known = {m.name.upper(): m for m in members}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise UsageError(f"family {options.family} has no member {', '.join(unknown)}; it has "
                             f"{', '.join(m.name for m in members)}")
        members = [known[name] for name in wanted]
    targets = []
    base = replace(spec_from_dict(family.baseline_arch), resolution=options.resolution or family.base_resolution)
    for member in members:
        spec = spec_from_dict(member.arch)
        if options.resolution is not None:
            # At another base the member keeps the FLOPs ratio to B0 it was grown with.
            spec = replace(spec, resolution=fitted_resolution(base, member.width, member.depth,
                                                              member.resolution_mult, member.flops_ratio))
        targets.append(Target(f"{member.name} of family {options.family}", spec, options.family, member.name))
    return targets


def rank_jobs(options: TrainOptions, shared: list[tuple[int, bool, str, int]]) -> tuple[Database, list[Job], list[TrainingRun]]:
    """Another rank's copy of rank 0's queue: the same runs, read from the database, with the data loaded here."""
    db = open_database(options.db_url, create=False)
    cache: dict[tuple, TaskData] = {}
    jobs = []
    for run_id, resume, out_dir, epochs_done in shared:
        run = training.get_run(db, run_id)
        jobs.append(Job(run.id, spec_from_dict(run.arch), _stored_data(run, options.device, cache),
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


def _task(options: TrainOptions) -> TaskConfig:
    return TaskConfig(dataset=options.dataset, data_dir=str(Path(options.data_dir).resolve()) if options.data_dir else None,
                      threads=options.threads or os.cpu_count() or 1, device=options.device)


def _trainable(targets: list[Target], options: TrainOptions) -> list[Target]:
    """The targets under --max-flops; a named network over it is a usage error, a family's big members are skipped."""
    max_flops = options.max_flops
    flops = {id(t): count_flops(t.spec) for t in targets}
    over = [(t, flops[id(t)]) for t in targets if flops[id(t)] > max_flops]
    if over and not (options.family is not None and options.members is None):
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


def build_queue(options: TrainOptions) -> tuple[Database, list[Job], list[TrainingRun]]:
    """Every target with every seed. Targets are checked and the data loaded before the database is opened for
    writing; a run this command stored before is continued (or, complete, reported) instead of stored again."""
    from nas.training.data import load_task_data

    targets = _trainable(resolve_targets(options), options)
    task = _task(options)
    base = TrainingRecipe(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr, weight_decay=options.weight_decay,
                          flip=options.flip if options.flip is not None else options.dataset in FLIP_DATASETS)
    data_by_resolution = {}
    for target in targets:
        if target.spec.resolution not in data_by_resolution:
            data_by_resolution[target.spec.resolution] = load_task_data(
                task, target.spec.resolution, subset=options.subset, val_images=options.val_images, test=True,
                test_dir=options.test_dir)
    db = open_database(options.db_url)
    jobs, finished = [], []
    for target in targets:
        data = data_by_resolution[target.spec.resolution]
        for seed in options.seeds:
            recipe = replace(base, seed=seed)
            stored = _stored_run(db, options, target, data, recipe, task)
            if stored is None:
                jobs.append(_store_job(db, options, target, data, recipe, task))
            elif stored.status is TrainingStatus.COMPLETE:
                finished.append(stored)
            else:
                jobs.append(_continue_job(db, stored, target.spec, data, recipe, options.out_dir))
    return db, jobs, finished


def _data_config(task: TaskConfig, options: TrainOptions, resolution: int) -> dict[str, Any]:
    return {"dataset": task.dataset, "data_dir": task.data_dir, "test_dir": options.test_dir,
            "val_images": options.val_images, "subset": options.subset, "resolution": resolution, "threads": task.threads,
            "processes": options.processes}


def _data_choice(data: dict[str, Any]) -> dict[str, Any]:
    """A run's data configuration as the options chose it, without what was counted once loaded (the number of
    training images, which older runs lack)."""
    return {name: value for name, value in data.items() if name != "train_images"}


def _stored_run(db: Database, options: TrainOptions, target: Target, data: TaskData, recipe: TrainingRecipe,
                task: TaskConfig) -> TrainingRun | None:
    """The run of this network, data and recipe (seed included) that an earlier command stored, if any; the
    complete one where there are several."""
    from nas.training.engine import trained_spec

    arch = spec_to_dict(trained_spec(target.spec, data, recipe))
    wanted = _data_config(task, options, target.spec.resolution)
    runs = [run for run in training.list_runs(db, family_id=target.family_id, recipe_key=recipe.key())
            if run.arch == arch and {"processes": 1, **_data_choice(run.data)} == wanted
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
    # A runs folder moved to another path or machine is found under --out-dir.
    moved = out_dir / f"run-{run.id}" / CHECKPOINT_NAME
    if run.checkpoint_path and Path(run.checkpoint_path).is_file():
        out_dir = Path(run.checkpoint_path).parent.parent
    elif run.epochs_done and not moved.is_file():
        raise UsageError(f"the checkpoint of run {run.id} is gone: neither {run.checkpoint_path} nor {moved} exists")
    training.resume_run(db, run.id, f"{socket.gethostname()}:{os.getpid()}")
    print(f"Training run {run.id}: {run.label}, seed {recipe.seed}, continuing after epoch {run.epochs_done}",
          file=sys.stderr, flush=True)
    return Job(run.id, spec, data, recipe, run.label, True, out_dir, run.epochs_done)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _store_job(db: Database, options: TrainOptions, target: Target, data: TaskData, recipe: TrainingRecipe,
               task: TaskConfig) -> Job:
    from nas.training.engine import trained_spec

    spec = trained_spec(target.spec, data, recipe)
    device = data.device.type
    run_id = training.create_run(db, TrainingRun(
        label=target.label, arch=spec_to_dict(spec), block_strings=" ".join(spec.block_strings()),
        dataset=task.dataset, data={**_data_config(task, options, spec.resolution), "train_images": len(data.train)},
        recipe=recipe.to_dict(),
        recipe_key=recipe.key(), device=device, resolution=spec.resolution, flops=count_flops(spec),
        params=count_params(spec), worker=f"{socket.gethostname()}:{os.getpid()}", family_id=target.family_id,
        member=target.member, trial_id=target.trial_id,
    ))
    print(f"Training run {run_id}: {target.label}, seed {recipe.seed}, {format_flops(count_flops(spec))} FLOPs at "
          f"{spec.resolution}px, {format_params(count_params(spec))} params, {recipe.epochs} epochs on "
          f"{data.describe()}, {device}", file=sys.stderr, flush=True)
    return Job(run_id, target.spec, data, recipe, target.label, False, options.out_dir)


def resume_jobs(db: Database, options: TrainOptions) -> list[Job]:
    run = training.get_run(db, options.resume)
    if run is None:
        raise UsageError(f"no training run with id {options.resume} in {db.shown_url}")
    if run.status is TrainingStatus.COMPLETE:
        raise UsageError(f"training run {run.id} is already complete (test accuracy {run.test_accuracy:.4f})")
    data = _stored_data(run, options.device)
    return [_continue_job(db, run, spec_from_dict(run.arch), data, TrainingRecipe(**run.recipe), options.out_dir)]
