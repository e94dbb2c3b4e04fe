"""Growing a baseline into a family: members, coefficients, grid points, proxy accuracies; and the family as
stored, in plain data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from db import Database, PointStatus, TrainingStatus
from db.families import FamilyInfo, GridPointInfo, MemberInfo, store_family
from db.training import RunInfo, list_runs
from nas.evaluation.proxy import train_and_evaluate
from nas.space.flops import FLOPS_CONVENTION, count_flops, count_params
from nas.space.spec import ArchSpec, spec_to_dict
from nas.training.config import ProxyConfig, TaskConfig
from nas.training.data import TaskData, load_task_data
from scaling.compound import (
    PAPER_COEFFICIENTS,
    MemberPlan,
    compound_plans,
    flops_factor,
    grid_points,
    member_spec,
    official_plans,
    round_resolution,
)


@dataclass(frozen=True)
class Baseline:
    spec: ArchSpec
    kind: str  # 'trial', 'file' or 'name'
    ref: str
    trial_id: int | None = None


@dataclass(frozen=True)
class Member:
    plan: MemberPlan
    spec: ArchSpec
    flops: int
    params: int
    flops_ratio: float
    accuracy: float | None = None
    train_seconds: float | None = None

    @property
    def ideal_ratio(self) -> float:
        return 2.0**self.plan.phi


@dataclass(frozen=True)
class GridPoint:
    alpha: float
    beta: float
    gamma: float
    status: PointStatus
    flops: int
    params: int
    resolution: int
    spec: ArchSpec
    accuracy: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Family:
    baseline: Baseline
    source: str
    coefficients: tuple[float, float, float] | None
    members: list[Member]
    grid: list[GridPoint] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


class ProxyEvaluator:
    """The search's proxy training at a scaled proxy resolution (data resized once per resolution)."""

    def __init__(self, task: TaskConfig, config: ProxyConfig) -> None:
        self.task = task
        self.config = config
        self._cache: dict[int, TaskData] = {}

    def proxy_resolution(self, resolution_mult: float) -> int:
        return max(32, int(round(self.config.resolution * resolution_mult)))

    def data(self, resolution_mult: float = 1.0) -> TaskData:
        size = self.proxy_resolution(resolution_mult)
        if size not in self._cache:
            self._cache[size] = load_task_data(self.task, size)
        return self._cache[size]

    def __call__(self, spec: ArchSpec, resolution_mult: float) -> tuple[float, float]:
        result = train_and_evaluate(spec, self.data(resolution_mult), self.config)
        return result.accuracy, result.train_seconds + result.eval_seconds


def _members(baseline: ArchSpec, plans: list[MemberPlan]) -> list[Member]:
    base_flops = count_flops(member_spec(baseline, plans[0]))
    members = []
    for plan in plans:
        spec = member_spec(baseline, plan)
        flops = count_flops(spec)
        members.append(Member(plan, spec, flops, count_params(spec), flops / base_flops))
    return members


def search_grid(
    baseline: ArchSpec,
    evaluate: ProxyEvaluator,
    step: float,
    tolerance: float,
    on_point: Callable[[GridPoint, int, int], None] | None = None,
) -> list[GridPoint]:
    """The paper's step 1: each (alpha, beta, gamma) scales the baseline at phi = 1 and is trained on the proxy."""
    points = grid_points(step, tolerance)
    if not points:
        raise ValueError(f"no grid point within {tolerance} of alpha*beta^2*gamma^2 = 2 at step {step}")
    results = []
    for index, (alpha, beta, gamma) in enumerate(points):
        plan = MemberPlan("phi1", 1, beta, alpha, gamma, round_resolution(baseline.resolution * gamma), 0.2)
        spec = member_spec(baseline, plan)
        common = dict(alpha=alpha, beta=beta, gamma=gamma, flops=count_flops(spec), params=count_params(spec),
                      resolution=plan.resolution, spec=spec)
        try:
            accuracy, _ = evaluate(spec, gamma)
            point = GridPoint(status=PointStatus.COMPLETE, accuracy=accuracy, **common)
        except Exception as exc:  # one failing grid point is recorded; the others still count
            point = GridPoint(status=PointStatus.FAILED, error=f"{type(exc).__name__}: {exc}", **common)
        results.append(point)
        if on_point is not None:
            on_point(point, index + 1, len(points))
    return results


def best_grid_point(points: list[GridPoint]) -> GridPoint:
    """Highest proxy accuracy; on a tie, fewer FLOPs."""
    done = [p for p in points if p.status is PointStatus.COMPLETE]
    if not done:
        raise ValueError("every grid point failed")
    return max(done, key=lambda p: (p.accuracy, -p.flops))


def grow_family(
    baseline: Baseline,
    source: str,
    phi_max: int,
    evaluate: ProxyEvaluator | None = None,
    grid_step: float = 0.1,
    grid_tolerance: float = 0.1,
    on_grid_point: Callable[[GridPoint, int, int], None] | None = None,
) -> Family:
    """Plan the members B0..B{phi_max} from the chosen coefficient source (grid search runs here)."""
    base_resolution = baseline.spec.resolution
    grid: list[GridPoint] = []
    if source == "official":
        coefficients = None
        plans = official_plans(phi_max, base_resolution)
    else:
        if source == "grid":
            if evaluate is None:
                raise ValueError("grid coefficients need a proxy evaluator")
            grid = search_grid(baseline.spec, evaluate, grid_step, grid_tolerance, on_grid_point)
            best = best_grid_point(grid)
            coefficients = (best.alpha, best.beta, best.gamma)
        elif source == "paper":
            coefficients = PAPER_COEFFICIENTS
        else:
            raise ValueError(f"unknown coefficient source {source!r}")
        plans = compound_plans(*coefficients, phi_max, base_resolution)
    config = {"phi_max": phi_max}
    if source == "grid":
        config.update(grid_step=grid_step, grid_tolerance=grid_tolerance)
    return Family(baseline, source, coefficients, _members(baseline.spec, plans), grid, config)


def evaluate_members(family: Family, evaluate: ProxyEvaluator, max_flops: float,
                     on_member: Callable[[Member], None] | None = None) -> Family:
    """Proxy accuracy for the members at or under `max_flops` (so that a CPU never tries to train B7)."""
    members = []
    for member in family.members:
        if member.flops <= max_flops:
            accuracy, seconds = evaluate(member.spec, member.plan.resolution_mult)
            member = Member(member.plan, member.spec, member.flops, member.params, member.flops_ratio, accuracy,
                            seconds)
            if on_member is not None:
                on_member(member)
        members.append(member)
    return Family(family.baseline, family.source, family.coefficients, members, family.grid,
                  {**family.config, "evaluate_max_flops": max_flops})


def save_family(db: Database, family: Family, name: str) -> int:
    """Store the family, its members and its grid points; its id."""
    alpha, beta, gamma = family.coefficients or (None, None, None)
    return store_family(db, FamilyInfo(
        name=name, baseline_kind=family.baseline.kind, baseline_ref=family.baseline.ref,
        baseline_trial_id=family.baseline.trial_id, baseline_arch=spec_to_dict(family.baseline.spec),
        coefficient_source=family.source, alpha=alpha, beta=beta, gamma=gamma,
        base_resolution=family.baseline.spec.resolution, config=family.config,
        members=[
            MemberInfo(
                name=m.plan.name, phi=m.plan.phi, width=m.plan.width, depth=m.plan.depth,
                resolution_mult=m.plan.resolution_mult, resolution=m.plan.resolution, dropout=m.plan.dropout,
                params=m.params, flops=m.flops, flops_ratio=m.flops_ratio, arch=spec_to_dict(m.spec),
                block_strings=" ".join(m.spec.block_strings()), accuracy=m.accuracy, train_seconds=m.train_seconds,
            )
            for m in family.members
        ],
        grid_points=[
            GridPointInfo(
                alpha=p.alpha, beta=p.beta, gamma=p.gamma, flops_factor=flops_factor(p.alpha, p.beta, p.gamma),
                status=p.status, flops=p.flops, params=p.params, resolution=p.resolution, arch=spec_to_dict(p.spec),
                accuracy=p.accuracy, error=p.error,
            )
            for p in family.grid
        ],
    ))


def latest_trained_runs(db: Database, family_id: int) -> dict[str, RunInfo]:
    """Member name -> its latest complete training run."""
    runs = [run for run in list_runs(db, family_id=family_id) if run.status is TrainingStatus.COMPLETE]
    return {run.member: run for run in runs}


def _run_summary(run: RunInfo) -> dict[str, Any]:
    return {"run_id": run.id, "dataset": run.dataset, "resolution": run.resolution, "epochs": run.epochs_done,
            "test_accuracy": run.test_accuracy, "val_accuracy": run.val_accuracy, "recipe": run.recipe,
            "weights_path": run.weights_path, "weights_sha256": run.weights_sha256}


def family_summary(family: FamilyInfo, runs: dict[str, RunInfo] | None = None) -> dict[str, Any]:
    """A stored family as plain data: what `scaling.grow --format json` prints and `family.json` holds; with
    `runs` (member name -> training run), each trained member's test accuracy and run."""
    runs = runs or {}
    return {
        "family_id": family.id,
        "name": family.name,
        "created_at": family.created_at.isoformat() if family.created_at else None,
        "baseline": {"kind": family.baseline_kind, "ref": family.baseline_ref, "trial_id": family.baseline_trial_id,
                     "arch": family.baseline_arch},
        "coefficients": {"source": family.coefficient_source, "alpha": family.alpha, "beta": family.beta,
                         "gamma": family.gamma},
        "config": family.config,
        "flops_convention": FLOPS_CONVENTION,
        "members": [
            {
                "name": m.name, "phi": m.phi, "width": m.width, "depth": m.depth, "resolution_mult": m.resolution_mult,
                "resolution": m.resolution, "dropout": m.dropout, "params": m.params, "flops": m.flops,
                "flops_ratio": m.flops_ratio, "ideal_ratio": 2.0**m.phi, "block_strings": m.block_strings.split(),
                "proxy_accuracy": m.accuracy,
                "test_accuracy": runs[m.name].test_accuracy if m.name in runs else None,
                "training_run": _run_summary(runs[m.name]) if m.name in runs else None,
            }
            for m in family.members
        ],
        "grid": [
            {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma, "flops_factor": p.flops_factor,
             "status": p.status.value, "proxy_accuracy": p.accuracy, "flops": p.flops, "params": p.params,
             "resolution": p.resolution}
            for p in family.grid_points
        ],
    }
