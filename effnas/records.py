"""The records of effnas: the states a search, trial or training run can be in, the roles of trials, and one
plain dataclass per stored concept (search, trial, family and its members, training run).

They sit below storage, as Optuna's `FrozenTrial` and `TrialState` do: `db/` maps them to rows and back, and the
layers above (scaling math, the evaluator, the dashboard) use them without importing anything that speaks SQL.
The states are str-valued enums stored as their plain value, so rows written before the enums existed read back
unchanged and a comparison with the bare string still holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


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


@dataclass(frozen=True)
class SearchInfo:
    id: int
    name: str
    status: SearchStatus
    strategy: str
    dataset: str
    # A search targets FLOPs or, with `target_latency_ms`, a latency measured as its config's `latency_*` say.
    target_flops: int | None
    resolution: int
    seed: int
    max_trials: int | None
    config: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    error: str | None
    target_latency_ms: float | None = None

    @property
    def objective(self) -> str:
        """What the search weighs accuracy against: flops or latency."""
        return "flops" if self.target_latency_ms is None else "latency"

    @property
    def target(self) -> float:
        return self.target_flops if self.target_latency_ms is None else self.target_latency_ms


@dataclass(frozen=True)
class SearchRow:
    """A search as the dashboard lists it: with its number of candidates and best reward so far."""

    id: int
    name: str
    target_flops: int | None
    strategy: str
    dataset: str
    status: SearchStatus
    trials: int
    max_trials: int | None
    best_reward: float | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    target_latency_ms: float | None = None


@dataclass(frozen=True)
class TrialInfo:
    id: int
    search_id: int
    number: int
    role: TrialRole
    status: TrialStatus
    arch: dict[str, Any]
    block_strings: str
    arch_key: str
    sample: dict[str, Any] | None
    accuracy: float | None
    flops: int | None
    params: int | None
    reward: float | None
    zero_cost_score: float | None
    epochs: int | None
    partial: bool
    first_rung_reward: float | None
    build_seconds: float | None
    train_seconds: float | None
    eval_seconds: float | None
    error: str | None
    worker: str | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    # Where a supernet scored the trial (`nas.search --evaluator supernet`): its accuracy and reward there. The
    # strategy saw this reward; `accuracy` and `reward` are the proxy's once the trial was proxy-trained.
    supernet_accuracy: float | None = None
    supernet_reward: float | None = None
    # A latency search's figures, in milliseconds under its latency protocol: predicted (by the latency table) for
    # every trial, measured for the winner and the reported front.
    latency_ms: float | None = None
    measured_latency_ms: float | None = None

    @property
    def fidelity(self) -> str:
        """What the trial's accuracy measures: `supernet` (a path of the search's supernet, never trained on its
        own), `partial` (stopped by successive halving) or `proxy` (the full proxy training)."""
        if self.partial:
            return "supernet" if self.supernet_accuracy is not None and self.epochs == 0 else "partial"
        return "proxy"


@dataclass(frozen=True)
class NewTrial:
    """What a search knows of a trial before it is evaluated."""

    role: TrialRole
    arch: dict[str, Any]
    block_strings: str
    arch_key: str
    sample: dict[str, Any] | None
    flops: int
    params: int
    # The training-free score the trial was chosen by, when the search prescreens candidates.
    zero_cost_score: float | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class FinishedTrial:
    """What a resumed search needs of a finished trial: which architecture, and the reward the strategy saw (the
    supernet's, for a trial a supernet scored)."""

    role: TrialRole
    arch_key: str
    status: TrialStatus
    reward: float | None


@dataclass(frozen=True)
class TrialPoint:
    """The columns of a trial that the dashboard's charts draw."""

    id: int
    search_id: int
    number: int
    role: TrialRole
    status: TrialStatus
    flops: int | None
    params: int | None
    accuracy: float | None
    reward: float | None
    block_strings: str
    partial: bool = False
    epochs: int | None = None
    latency_ms: float | None = None
    measured_latency_ms: float | None = None

    @property
    def supernet_scored(self) -> bool:
        """Scored on a supernet path and never trained on its own (a partial trial of 0 epochs)."""
        return self.partial and self.epochs == 0


@dataclass(frozen=True)
class FamilyMember:
    """One member of a family: how it is scaled from the baseline (multipliers, resolution, dropout), the network
    that gives (`arch`, effnas's spec as JSON, and its block strings), what it costs (FLOPs at its resolution,
    params, FLOPs over B0's) and, where it was measured, its proxy accuracy."""

    name: str
    phi: int
    width: float
    depth: float
    resolution_mult: float
    resolution: int
    dropout: float
    params: int
    flops: int
    flops_ratio: float
    arch: dict[str, Any]
    block_strings: str
    accuracy: float | None = None
    train_seconds: float | None = None
    # Measured inference latency at its resolution: {"batch_1_ms", "batch_32_ms", "measured_on"} (the protocol's
    # environment at batch 1), where it was measured.
    latency: dict[str, Any] | None = None

    @property
    def ideal_ratio(self) -> float:
        """What the scaling rule promises: 2^phi times B0's FLOPs."""
        return 2.0**self.phi


@dataclass(frozen=True)
class GridPoint:
    """One (alpha, beta, gamma) of the compound-scaling grid search, applied at phi = 1, and its proxy result."""

    alpha: float
    beta: float
    gamma: float
    flops_factor: float
    status: PointStatus
    flops: int | None
    params: int | None
    resolution: int | None
    arch: dict[str, Any] | None
    accuracy: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Family:
    """A baseline grown into members B0..B{phi_max} by a scaling rule, with the coefficients and grid search that
    made them."""

    name: str
    baseline_kind: str
    baseline_ref: str
    baseline_trial_id: int | None
    baseline_arch: dict[str, Any]
    coefficient_source: str
    alpha: float | None
    beta: float | None
    gamma: float | None
    base_resolution: int
    config: dict[str, Any]
    members: list[FamilyMember]
    grid_points: list[GridPoint] = field(default_factory=list)
    # compound, or the one dimension (width, depth, resolution) that alpha, beta, gamma scale.
    rule: str = "compound"
    id: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class FamilyRow:
    """A family as the dashboard lists it."""

    id: int
    name: str
    rule: str
    source: str
    baseline_ref: str | None
    baseline_trial_id: int | None
    search_id: int | None
    members: int
    created_at: datetime | None


def budget_label(data: dict[str, Any], recipe: dict[str, Any]) -> str:
    """What training a run had, training images x epochs, from its data configuration and recipe: the image count
    it stored, else the --subset it was given."""
    images = data.get("train_images") or data.get("subset")
    epochs = f"{recipe['epochs']} epoch{'s' if recipe['epochs'] != 1 else ''}"
    return f"{images:,} training images x {epochs}" if images else f"all training images x {epochs}"


@dataclass(frozen=True)
class TrainingRun:
    """One full training of one network: what was trained, on which data, with which recipe, where; then, as
    it goes, its curve (one point per epoch) and, when it ends, its status and results. A new run is written
    with the fields before `id`; the database fills in the rest."""

    label: str
    arch: dict[str, Any]
    block_strings: str
    dataset: str
    data: dict[str, Any]
    recipe: dict[str, Any]
    recipe_key: str
    device: str
    resolution: int
    flops: int
    params: int
    worker: str | None
    family_id: int | None = None
    member: str | None = None
    trial_id: int | None = None
    id: int | None = None
    status: TrainingStatus = TrainingStatus.RUNNING
    error: str | None = None
    epochs_done: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    chosen_weights: str | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    seconds: float | None = None
    checkpoint_path: str | None = None
    weights_path: str | None = None
    weights_sha256: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def budget(self) -> str:
        return budget_label(self.data, self.recipe)

    def to_json(self) -> dict[str, Any]:
        """The run as effnas prints and exports it (`scaling.train --format json`, `family.json`)."""
        return {"run_id": self.id, "label": self.label, "member": self.member, "family_id": self.family_id,
                "dataset": self.dataset, "status": self.status.value, "seed": self.recipe.get("seed"),
                "device": self.device, "data": self.data, "test_accuracy": self.test_accuracy,
                "val_accuracy": self.val_accuracy, "params": self.params, "flops": self.flops,
                "resolution": self.resolution, "seconds": self.seconds, "epochs": self.epochs_done,
                "chosen_weights": self.chosen_weights, "best_epoch": self.best_epoch,
                "weights_path": self.weights_path, "weights_sha256": self.weights_sha256,
                "block_strings": self.block_strings, "recipe": self.recipe}


@dataclass(frozen=True)
class Supernet:
    """A trained (or training) supernet of a search space on one task: what defines it (`key`, a SHA-256 of
    `definition`), where its weights are, and its training, epoch by epoch."""

    key: str
    definition: dict[str, Any]
    dataset: str
    resolution: int
    stem_stride: int
    epochs: int
    id: int | None = None
    status: TrainingStatus = TrainingStatus.RUNNING
    epochs_done: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_path: str | None = None
    weights_path: str | None = None
    weights_sha256: str | None = None
    seconds: float | None = None
    worker: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Latency:
    """One measured inference latency of an input at `resolution` px, in milliseconds, under the protocol its table
    or record names: `median_ms` and `iqr_ms` scaled to the machine's fast end by a reference network timed in
    turn (nas.evaluation.latency), `raw_median_ms` the plain median of the `runs` timed runs."""

    median_ms: float
    iqr_ms: float
    runs: int
    resolution: int
    raw_median_ms: float | None = None

    @property
    def relative_spread(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0
