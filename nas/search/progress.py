"""What a search shows: the banner of what is about to run, then while it runs a bar on a terminal (trial k of N,
best reward, time left) or one line per trial, and at the end the summary of the winner against EfficientNet-B0."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import Database, db_argument, describe_url, searches, trials
from effnas.cli import LOG_INTERVAL_SECONDS, format_duration
from effnas.records import TrialRole, TrialStatus
from nas.search.config import SearchConfig
from nas.search.study import SearchEvents, TrialEnd
from nas.search.targets import describe_target
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params

if TYPE_CHECKING:
    from nas.search.trial_processes import TrialProcessOptions
    from nas.training.data import TaskData


def trial_label(number: int, role: TrialRole) -> str:
    return "EfficientNet-B0 reference" if role is TrialRole.REFERENCE else f"trial {number}"


def _cost_text(trial: TrialEnd) -> str:
    flops = f"{format_flops(trial.flops)} FLOPs"
    return flops if trial.latency_ms is None else f"{trial.latency_ms:.2f} ms predicted, {flops}"


def outcome_text(trial: TrialEnd) -> str:
    if trial.status is TrialStatus.COMPLETE:
        scored = "supernet acc" if trial.partial and trial.epochs == 0 else "proxy acc"
        text = f"{scored} {trial.accuracy:.3f}, {_cost_text(trial)}, reward {trial.reward:.4f}"
        if trial.partial and trial.epochs:
            return f"{text} after {trial.epochs} epoch(s), stopped by successive halving"
        return text
    if trial.status is TrialStatus.REJECTED:
        return f"rejected without training ({_cost_text(trial)})"
    if trial.status is TrialStatus.INTERRUPTED:
        return f"interrupted: {trial.error}"
    return f"failed: {trial.error}"


class ProgressDisplay(SearchEvents):
    def __init__(self, config: SearchConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.started_done = 0
        self.bar = None
        self.running: list[str] = []  # several at once when trial processes train in parallel
        self.best_text = "best reward -"
        self.supernet_since: tuple[int, float] | None = None  # the supernet epoch's first step seen, and when
        self.supernet_line_at = 0.0

    def search_started(self, done: int) -> None:
        self.started_done = done
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.config.trials, initial=done, file=sys.stderr, dynamic_ncols=True, unit="trial",
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} trials [{elapsed}]{postfix}",
            )
        elif done:
            print(f"resuming with {done} of {self.config.trials} trials done", file=sys.stderr, flush=True)

    def _left(self, done: int) -> str:
        new = done - self.started_done
        elapsed = self.clock()
        parts = []
        if new > 0:
            parts.append(elapsed / new * (self.config.trials - done))
        if self.config.time_budget is not None:
            parts.append(max(0.0, self.config.time_budget - elapsed))
        return f"~{format_duration(min(parts))} left" if parts else "time left: estimating"

    def _describe_running(self, suffix: str = "") -> None:
        if self.bar is not None:
            self.bar.set_description_str(", ".join(self.running) + suffix)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def trial_started(self, number: int, role: TrialRole, scoring: bool = False) -> None:
        label = trial_label(number, role)
        self.running.append(label)
        if self.bar is not None:
            self._describe_running()
        elif not scoring:  # a supernet scores a candidate in about a second: its result line follows at once
            print(f"{label}: training ...", file=sys.stderr, flush=True)

    def supernet_step(self, epoch: int, epochs: int, step: int, steps: int) -> None:
        where = f"supernet epoch {epoch}/{epochs}, step {step}/{steps}"
        if self.bar is not None:
            self.bar.set_description_str(where)
            return
        now = self.clock()
        if self.supernet_since is None or step == 1:
            self.supernet_since = (step, now)
            self.supernet_line_at = now
        elif now - self.supernet_line_at >= LOG_INTERVAL_SECONDS and step < steps:
            self.supernet_line_at = now
            first_step, first_time = self.supernet_since
            left = (now - first_time) / (step - first_step) * (steps - step)
            print(f"{where}, ~{format_duration(left)} left in this epoch", file=sys.stderr, flush=True)

    def supernet_epoch(self, epoch: int, epochs: int, seconds_left: float) -> None:
        self.note(f"supernet: epoch {epoch}/{epochs} trained, ~{format_duration(seconds_left)} of its training left")

    def epoch_done(self, epoch: int, epochs: int) -> None:
        self._describe_running(f" (epoch {epoch}/{epochs})")

    def trial_finished(self, trial: TrialEnd, done: int, best: TrialEnd | None) -> None:
        label = trial_label(trial.number, trial.role)
        if label in self.running:
            self.running.remove(label)
            self._describe_running()
        if best is not None:
            self.best_text = f"best reward {best.reward:.4f} (proxy acc {best.accuracy:.3f}, {_cost_text(best)})"
        left = self._left(done)
        candidate = trial.role is TrialRole.CANDIDATE
        if self.bar is not None:
            if candidate:
                self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"{self.best_text}, {left}")
        else:
            if candidate:
                label += f" ({done}/{self.config.trials} done)"
            print(f"{label}: {outcome_text(trial)} | {self.best_text} | {left}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def busy_machine_note(threads: int, cores: int, load: float) -> str | None:
    """A note when other work already occupies the cores this search's training threads need, else None.

    Multi-threaded CPU training runs in lockstep: when a thread loses its core to another process, the others wait
    for it. Measured on 2 cores beside two 1-thread trainings: EfficientNet-B0 and 2 trials took 3.0 min with
    --threads 1; with 2 threads, B0 alone had not finished after 5 min."""
    if threads <= 1 or load < 1.0 or load + threads <= cores:
        return None
    return (f"note: this machine is busy (load {load:.1f} on {cores} cores): training with {threads} threads slows "
            f"down several-fold when other work shares the cores; --threads 1 is faster while it lasts")


def print_banner(search_id: int, config: SearchConfig, data: TaskData, trial_options: TrialProcessOptions | None,
                 db_url: str, log_file: Path, stem_reason: str, evaluator_reason: str) -> None:
    """What is about to run, and notes on threads and a busy machine."""
    where = "in this process" if trial_options is None else (
        f"{trial_options.workers} at a time in trial processes ({trial_options.platform} training service)"
    )
    print(
        f"Search {search_id}: {config.strategy}, {config.trials} trials"
        f"{f' (each the best of {config.prescreen} by {config.prescreen_score})' if config.prescreen > 1 else ''}"
        f"{f', successive halving (1 epoch, then the best 1/{config.eta} to {config.proxy.epochs})' if config.fidelity == 'halving' else ''}"
        f"{', time budget ' + format_duration(config.time_budget) if config.time_budget else ''}, "
        f"{describe_target(config.reward)} ({FLOPS_CONVENTION}). {describe_evaluator(config)} ({evaluator_reason}). "
        f"Stem stride {config.stem_stride} ({stem_reason}). "
        f"Data: {data.describe()}. Training {where}. Database: {describe_url(db_url)}. NNI log: {log_file}",
        file=sys.stderr,
    )
    cores = os.cpu_count() or 1
    local_trials = trial_options is not None and trial_options.platform == "local"
    if local_trials and config.task.threads * trial_options.workers > cores:
        print(f"note: each trial trains with {config.task.threads} threads (stored with the search, since results "
              f"depend on it): {trial_options.workers} workers oversubscribe the {cores} cores here", file=sys.stderr)
    machines = ((trial_options.nni_config.get("trainingService") or {}).get("machineList") or []
                if trial_options is not None else [])
    if any(isinstance(machine, dict) and machine.get("password") for machine in machines):
        print("note: NNI's web UI shows the SSH password of --nni-config in plain text to anyone who reaches its "
              f"manager (on {trial_options.manager_address or 'all interfaces'}); an sshKeyFile avoids that",
              file=sys.stderr)
    busy = busy_machine_note(config.task.threads, cores, os.getloadavg()[0])
    if busy and data.device.type == "cpu":
        print(busy, file=sys.stderr)


def describe_evaluator(config: SearchConfig) -> str:
    if config.evaluator == "supernet":
        return (f"Candidates scored on a supernet of the space ({config.supernet.epochs} epoch(s), trained once per "
                f"task and reused), the best {config.proxy_trained} then proxy-trained")
    return f"Candidates proxy-trained ({config.proxy.epochs} epochs)"


def _fidelity_lines(db: Database, search_id: int, config: SearchConfig) -> list[str]:
    """What the summary says of candidates not trained to the full proxy: halving's stopped ones, or the ones a
    supernet scored."""
    notes: list[str] = []
    if config.fidelity == "halving":
        rows = trials.trial_columns(db, search_id, ("role", "status", "partial"))
        complete = [row for row in rows
                    if row["role"] == TrialRole.CANDIDATE.value and row["status"] == TrialStatus.COMPLETE.value]
        stopped = sum(row["partial"] for row in complete)
        notes.append(f"Successive halving (eta {config.eta}): {len(complete) - stopped} of {len(complete)} "
                     f"complete candidates trained the full proxy; {stopped} stopped after the first epoch and "
                     "cannot be the winner.")
    if config.evaluator == "supernet":
        rows = trials.trial_columns(db, search_id, ("role", "status", "partial", "supernet_reward"))
        scored = [row for row in rows if row["role"] == TrialRole.CANDIDATE.value
                  and row["status"] == TrialStatus.COMPLETE.value and row["supernet_reward"] is not None]
        trained = sum(not row["partial"] for row in scored)
        notes.append(f"Supernet scoring ({config.supernet.epochs} supernet epoch(s)): {len(scored)} candidates "
                     f"scored on the supernet; the best {trained} by supernet reward were proxy-trained, and only "
                     "proxy-trained candidates can win.")
    return notes


def _comparison_lines(columns: list[tuple[str, Any]], objective: str) -> list[str]:
    """The summary's networks side by side: block strings stage by stage, then FLOPs, params, accuracy, reward."""
    lines = []
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
        ("proxy acc", lambda t: f"{t.accuracy:.4f}"),
        ("reward", lambda t: f"{t.reward:.4f}"),
    ]
    if objective == "latency":
        rows += [("latency", lambda t: "-" if t.latency_ms is None else f"{t.latency_ms:.3f} ms predicted"),
                 ("measured", lambda t: "-" if t.measured_latency_ms is None else f"{t.measured_latency_ms:.3f} ms")]
    for label, show in rows:
        lines.append(f"{label:10}" + "".join(f"{show(trial):<{width}}" for _, trial in columns))
    return lines


def search_summary(db: Database, search_id: int, config: SearchConfig, data: TaskData, seconds: float) -> str:
    search = searches.get_search(db, search_id)
    counts = trials.candidate_status_counts(db, search_id)
    winner = trials.best_trial(db, search_id)
    reference = trials.reference_trial(db, search_id)
    total = sum(counts.values())
    resolution = config.reward.resolution
    target = describe_target(config.reward).replace("target", "Target", 1)
    lines = [
        f"Search {search_id} ({search.name}) {search.status}: {total} trials "
        f"({counts.get(TrialStatus.COMPLETE, 0)} complete, {counts.get(TrialStatus.FAILED, 0)} failed, "
        f"{counts.get(TrialStatus.REJECTED, 0)} rejected) in {format_duration(seconds)}.",
        f"{FLOPS_CONVENTION}, counted at {resolution}x{resolution} with {data.in_channels} input "
        f"channel(s) and {data.num_classes} classes. {target}, "
        f"{config.reward.constraint} constraint. Accuracy: proxy validation accuracy on {data.name} "
        f"({config.proxy.epochs} epochs at {config.proxy.resolution}px), not a trained test accuracy.",
        "",
    ]
    lines[-1:-1] = _fidelity_lines(db, search_id, config)
    columns = []
    if winner is not None:
        columns.append((f"winner (trial {winner.number})", winner))
    # The soft reward is nearly flat in FLOPs, so the winner can lie far from the target; beside it, the answer to
    # "the best network I can afford".
    accurate = trials.most_accurate_within(db, search_id, config.reward.target, config.reward.objective)
    if accurate is not None and (winner is None or accurate.id != winner.id):
        columns.append((f"most accurate within target (trial {accurate.number})", accurate))
    if reference is not None and reference.status is TrialStatus.COMPLETE:
        stem = "" if config.stem_stride == 2 else f", stem stride {config.stem_stride}"
        columns.append((f"EfficientNet-B0{stem} (same evaluator)", reference))
    if not columns:
        lines.append("No trial completed.")
        return "\n".join(lines)
    lines += _comparison_lines(columns, config.reward.objective)
    db_arg = db_argument(db.url)
    lines += [
        "",
        f"Search id: {search_id}",
        f"Scale it:  python -m scaling.grow --search {search_id}{db_arg}"
        + ("" if accurate is None or winner is None or accurate.id == winner.id
           else "  (--pick accuracy: the most accurate within the target)"),
        f"Dashboard: python -m dashboard{db_arg}",
    ]
    return "\n".join(lines)
