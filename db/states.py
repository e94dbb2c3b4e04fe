"""The states a stored search, trial or training run can be in, and the roles of trials.

They are str-valued enums stored as their plain value, so rows written before the enums existed read back
unchanged and a comparison with the bare string still holds.
"""

from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    # Enum hashes by name; hashing as the value keeps `"queued" in IN_FLIGHT` true, as `==` already is.
    __hash__ = str.__hash__


class TrialStatus(_StrEnum):
    """queued (numbered, waiting for a trial process), running, then complete, failed or rejected (over the
    FLOPs cap, never trained); interrupted when its process stopped first, and trained again on resume."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    REJECTED = "rejected"
    INTERRUPTED = "interrupted"


IN_FLIGHT = frozenset({TrialStatus.QUEUED, TrialStatus.RUNNING})
FINISHED = frozenset({TrialStatus.COMPLETE, TrialStatus.FAILED, TrialStatus.REJECTED})


class TrialRole(_StrEnum):
    """A candidate proposed by the strategy, or EfficientNet-B0 evaluated once per search for comparison."""

    CANDIDATE = "candidate"
    REFERENCE = "reference"


class SearchStatus(_StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class PointStatus(_StrEnum):
    """A compound-scaling grid point: trained on the proxy, or failed with its error."""

    COMPLETE = "complete"
    FAILED = "failed"


class TrainingStatus(_StrEnum):
    """A full training: running (one epoch after another, a checkpoint after each), then complete, failed (with
    its error) or interrupted (Ctrl-C or a killed process; `--resume` continues from the last checkpoint)."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
