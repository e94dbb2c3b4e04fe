"""Training a queue of stored runs to their last epoch: the display of where the queue stands, one run trained
(or continued) with a checkpoint and a stored point per epoch, and the queue's failures stored with their run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import Database, training
from effnas.cli import LOG_INTERVAL_SECONDS, format_duration
from effnas.records import TrainingRun, TrainingStatus
from nas.space.flops import count_flops
from nas.space.spec import ArchSpec
from nas.training.config import TrainingRecipe

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


@dataclass
class QueueDisplay:
    """Where a queue of runs stands. On a terminal a bar per epoch (steps, loss); elsewhere (a log) a line within
    the epoch every LOG_INTERVAL_SECONDS (steps, loss, time left); wherever the output goes a line per epoch: run k
    of n, network and seed, epoch, loss, validation accuracy, images/s, and the time left for the run and for the
    whole queue (from this process's seconds per FLOP x image so far)."""

    jobs: list[Job]
    silent: bool = False
    clock: Callable[[], float] = time.monotonic
    index: int = 0
    done: int = 0
    bar: Any = None
    seconds: float = 0.0
    work: float = 0.0
    remaining: dict[int, int] = field(default_factory=dict)
    epoch_started: tuple[int, float] | None = None  # the epoch's first step seen, and when
    last_line: float = 0.0

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
        self.epoch_started = None
        self.remaining[self.job.run_id] = self.job.recipe.epochs - epochs_done

    def step(self, step: int, steps: int, loss: float) -> None:
        if self.silent:
            return
        if not sys.stderr.isatty():
            self._log_step(step, steps, loss)
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, file=sys.stderr, dynamic_ncols=True, leave=False, unit="step",
                            desc=f"{self.label()}: epoch {self.done + 1}/{self.job.recipe.epochs}")
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix_str(f"loss {loss:.3f}")

    def _log_step(self, step: int, steps: int, loss: float) -> None:
        now = self.clock()
        if self.epoch_started is None:
            self.epoch_started, self.last_line = (step, now), now
            return
        if now - self.last_line < LOG_INTERVAL_SECONDS or step >= steps:
            return
        self.last_line = now
        first_step, first_time = self.epoch_started
        per_step = (now - first_time) / (step - first_step)
        epochs_after = self.job.recipe.epochs - self.done - 1
        print(f"{self.label()}: epoch {self.done + 1}/{self.job.recipe.epochs}, step {step}/{steps}, loss "
              f"{loss:.4f}, ~{format_duration(per_step * (steps - step))} left in this epoch, "
              f"~{format_duration(per_step * (steps - step + steps * epochs_after))} left for this run",
              file=sys.stderr, flush=True)

    def time_left(self, jobs: list[Job]) -> str:
        if not self.work:
            return "?"
        rate = self.seconds / self.work
        return format_duration(sum(rate * self.remaining[job.run_id] * job.epoch_work for job in jobs))

    def epoch(self, point: dict[str, Any], done: int) -> None:
        self.close()
        self.epoch_started = None
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


def run_queue(db: Database, jobs: list[Job], finished: list[TrainingRun], parallel: Distributed | None, prog: str,
              again: Callable[[Job], str]) -> int:
    """Train the queue, appending each run to `finished`; a failed run is stored and the queue goes on (a
    data-parallel job stops instead, since every rank must stay in step). The exit code: 0, 1 when a run failed,
    130 when interrupted (`again(job)` is the command that continues)."""
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
                      f"{again(job)}", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - stored with the run, then one line for the user
            display.close()
            if parallel is not None and peer_lost(exc):
                if main_rank:
                    training.end_run(db, job.run_id, TrainingStatus.INTERRUPTED,
                                     error="another process of the data-parallel job stopped")
                return 1
            message = failure_line(exc, job)
            if main_rank:
                training.end_run(db, job.run_id, TrainingStatus.FAILED, error=message)
            print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
            if parallel is not None:
                return 1
            failures.append(message)
    finished.sort(key=lambda run: run.id)
    return 1 if failures else 0


def _run_job(db: Database, job: Job, display: QueueDisplay, parallel: Distributed | None) -> TrainingRun:
    run_dir = (job.out_dir / f"run-{job.run_id}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return train_run(db, job, run_dir, display, parallel)


class JobStopped(Exception):
    """A data-parallel rank's SIGTERM: the launcher stops the job's other ranks when one ends (a user's Ctrl-C is
    SIGINT), so the rank that ended reports it and this one says nothing."""


def peer_lost(exc: Exception) -> bool:
    """Whether a collective failed because another rank of the job is gone (its own failure is reported by it)."""
    import torch.distributed

    if isinstance(exc, JobStopped):
        return True

    # Gloo reports a vanished peer as a plain RuntimeError from inside the backward pass.
    text = str(exc)
    return isinstance(exc, torch.distributed.DistError) or (
        isinstance(exc, RuntimeError) and any(mark in text for mark in PEER_LOST_MARKS))


def failure_line(exc: Exception, job: Job) -> str:
    from nas.training.memory import is_out_of_memory

    if is_out_of_memory(exc):
        data = job.data
        where = "device" if data.device.type == "cuda" else "CPU"
        return (f"run {job.run_id} ran out of {where} memory training at {data.resolution} px, batch size "
                f"{job.recipe.batch_size}, on {len(data.train):,} training images; start it again with a smaller "
                "--batch-size (or a smaller --resolution)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"run {job.run_id} failed: {text}"
