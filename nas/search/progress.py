"""What a search shows while it runs: a bar on a terminal (trial k of N, best reward, time left), one line per
trial otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable

from effnas.cli import format_duration
from effnas.records import TrialRole, TrialStatus
from nas.search.config import SearchConfig
from nas.search.study import SearchEvents, TrialEnd
from nas.space.flops import format_flops


def trial_label(number: int, role: TrialRole) -> str:
    return "EfficientNet-B0 reference" if role is TrialRole.REFERENCE else f"trial {number}"


def outcome_text(trial: TrialEnd) -> str:
    if trial.status is TrialStatus.COMPLETE:
        text = f"proxy acc {trial.accuracy:.3f}, {format_flops(trial.flops)} FLOPs, reward {trial.reward:.4f}"
        return f"{text} after {trial.epochs} epoch(s), stopped by successive halving" if trial.partial else text
    if trial.status is TrialStatus.REJECTED:
        return f"rejected without training ({format_flops(trial.flops)} FLOPs)"
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

    def trial_started(self, number: int, role: TrialRole) -> None:
        label = trial_label(number, role)
        self.running.append(label)
        if self.bar is not None:
            self._describe_running()
        else:
            print(f"{label}: training ...", file=sys.stderr, flush=True)

    def epoch_done(self, epoch: int, epochs: int) -> None:
        self._describe_running(f" (epoch {epoch}/{epochs})")

    def trial_finished(self, trial: TrialEnd, done: int, best: TrialEnd | None) -> None:
        label = trial_label(trial.number, trial.role)
        if label in self.running:
            self.running.remove(label)
            self._describe_running()
        if best is not None:
            self.best_text = (f"best reward {best.reward:.4f} (proxy acc {best.accuracy:.3f}, "
                              f"{format_flops(best.flops)})")
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
