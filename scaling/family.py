"""Growing a baseline into a family and storing it: members, coefficients, grid points, proxy accuracies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import FamilyMemberRecord, FamilyRecord, GridPointRecord
from nas.evaluation.data import ProxyData
from nas.space.flops import FLOPS_CONVENTION, count_flops, count_params
from nas.space.spec import ArchSpec, spec_to_dict
from nas.evaluation.proxy import ProxyConfig, train_and_evaluate
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
    status: str
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
    """The search's evaluator at a scaled proxy resolution (data resized once per resolution)."""

    def __init__(self, load: Callable[[int], ProxyData], base_resolution: int, config: ProxyConfig) -> None:
        self._load = load
        self._base = base_resolution
        self._cache: dict[int, ProxyData] = {}
        self.config = config

    def proxy_resolution(self, resolution_mult: float) -> int:
        return max(32, int(round(self._base * resolution_mult)))

    def __call__(self, spec: ArchSpec, resolution_mult: float) -> tuple[float, float]:
        size = self.proxy_resolution(resolution_mult)
        if size not in self._cache:
            self._cache[size] = self._load(size)
        result = train_and_evaluate(spec, self._cache[size], self.config)
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
            point = GridPoint(status="complete", accuracy=accuracy, **common)
        except Exception as exc:  # one failing grid point is recorded; the others still count
            point = GridPoint(status="failed", error=f"{type(exc).__name__}: {exc}", **common)
        results.append(point)
        if on_point is not None:
            on_point(point, index + 1, len(points))
    return results


def best_grid_point(points: list[GridPoint]) -> GridPoint:
    """Highest proxy accuracy; on a tie, fewer FLOPs."""
    done = [p for p in points if p.status == "complete"]
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


def store_family(factory: sessionmaker[Session], family: Family, name: str) -> int:
    """Write the family, its members and its grid points in one transaction; return its id."""
    alpha, beta, gamma = family.coefficients or (None, None, None)
    with factory.begin() as session:
        record = FamilyRecord(
            name=name,
            baseline_kind=family.baseline.kind,
            baseline_trial_id=family.baseline.trial_id,
            baseline_ref=family.baseline.ref,
            baseline_arch=spec_to_dict(family.baseline.spec),
            coefficient_source=family.source,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            phi_max=len(family.members) - 1,
            base_resolution=family.baseline.spec.resolution,
            config=family.config,
        )
        for member in family.members:
            record.members.append(
                FamilyMemberRecord(
                    name=member.plan.name, phi=member.plan.phi, width=member.plan.width, depth=member.plan.depth,
                    resolution_mult=member.plan.resolution_mult, resolution=member.plan.resolution,
                    dropout=member.plan.dropout, params=member.params, flops=member.flops,
                    flops_ratio=member.flops_ratio, arch=spec_to_dict(member.spec),
                    block_strings=" ".join(member.spec.block_strings()), accuracy=member.accuracy,
                    train_seconds=member.train_seconds,
                )
            )
        for point in family.grid:
            record.grid_points.append(
                GridPointRecord(
                    alpha=point.alpha, beta=point.beta, gamma=point.gamma,
                    flops_factor=flops_factor(point.alpha, point.beta, point.gamma), status=point.status,
                    accuracy=point.accuracy, flops=point.flops, params=point.params, resolution=point.resolution,
                    error=point.error, arch=spec_to_dict(point.spec),
                )
            )
        session.add(record)
        session.flush()
        return record.id


def family_summary(record: FamilyRecord) -> dict[str, Any]:
    """A stored family as plain data: what `scaling.grow --json` prints and `family.json` holds."""
    return {
        "family_id": record.id,
        "name": record.name,
        "created_at": record.created_at.isoformat() if record.created_at else None,
        "baseline": {"kind": record.baseline_kind, "ref": record.baseline_ref, "trial_id": record.baseline_trial_id,
                     "arch": record.baseline_arch},
        "coefficients": {"source": record.coefficient_source, "alpha": record.alpha, "beta": record.beta,
                         "gamma": record.gamma},
        "config": record.config,
        "flops_convention": FLOPS_CONVENTION,
        "members": [
            {
                "name": m.name, "phi": m.phi, "width": m.width, "depth": m.depth, "resolution_mult": m.resolution_mult,
                "resolution": m.resolution, "dropout": m.dropout, "params": m.params, "flops": m.flops,
                "flops_ratio": m.flops_ratio, "ideal_ratio": 2.0**m.phi, "block_strings": m.block_strings.split(),
                "accuracy": m.accuracy,
            }
            for m in record.members
        ],
        "grid": [
            {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma, "flops_factor": p.flops_factor, "status": p.status,
             "accuracy": p.accuracy, "flops": p.flops, "params": p.params, "resolution": p.resolution}
            for p in record.grid_points
        ],
    }
