"""Compound scaling: depth alpha^phi, width beta^phi, resolution gamma^phi, with alpha * beta^2 * gamma^2 ~ 2.

A member of a family is its baseline spec with other global multipliers, resolution and dropout; depth and width
reach the network through the builder's official `round_repeats` / `round_filters`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from nas.space.spec import OFFICIAL_COEFFICIENTS, ArchSpec

PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)
RESOLUTION_DIVISOR = 8
SOURCES = ("paper", "official", "grid")
OFFICIAL_BASE_RESOLUTION = OFFICIAL_COEFFICIENTS["efficientnet-b0"].resolution


@dataclass(frozen=True)
class MemberPlan:
    """How one member is scaled from the baseline."""

    name: str
    phi: int
    width: float
    depth: float
    resolution_mult: float
    resolution: int
    dropout: float


def round_resolution(value: float, divisor: int = RESOLUTION_DIVISOR) -> int:
    """Nearest multiple of `divisor` (at least one divisor)."""
    return max(divisor, int(value / divisor + 0.5) * divisor)


def dropout_for(phi: int) -> float:
    """The official schedule: 0.2 for B0/B1, +0.1 every two steps, at most 0.5."""
    return min(0.5, 0.2 + 0.1 * (phi // 2))


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """How much one step of phi multiplies FLOPs: alpha * beta^2 * gamma^2."""
    return alpha * beta**2 * gamma**2


def compound_plans(alpha: float, beta: float, gamma: float, phi_max: int, base_resolution: int) -> list[MemberPlan]:
    """Members B0..B{phi_max} by the paper's rule; resolutions rounded to a multiple of 8."""
    return [
        MemberPlan(
            name=f"B{phi}",
            phi=phi,
            width=beta**phi,
            depth=alpha**phi,
            resolution_mult=gamma**phi,
            resolution=round_resolution(base_resolution * gamma**phi),
            dropout=dropout_for(phi),
        )
        for phi in range(phi_max + 1)
    ]


def official_plans(phi_max: int, base_resolution: int) -> list[MemberPlan]:
    """Members from the published B0..B7 table; resolutions relative to the baseline's (exact at 224)."""
    if phi_max > 7:
        raise ValueError("the official table stops at B7 (--phi-max 7)")
    plans = []
    for phi in range(phi_max + 1):
        row = OFFICIAL_COEFFICIENTS[f"efficientnet-b{phi}"]
        mult = row.resolution / OFFICIAL_BASE_RESOLUTION
        resolution = row.resolution if base_resolution == OFFICIAL_BASE_RESOLUTION else round_resolution(
            base_resolution * mult
        )
        plans.append(MemberPlan(f"B{phi}", phi, row.width, row.depth, mult, resolution, row.dropout))
    return plans


def member_spec(baseline: ArchSpec, plan: MemberPlan) -> ArchSpec:
    """The baseline grown by `plan` (multipliers compose with any the baseline already has)."""
    return replace(
        baseline,
        width=baseline.width * plan.width,
        depth=baseline.depth * plan.depth,
        resolution=plan.resolution,
        dropout=plan.dropout,
    )


def grid_points(step: float = 0.05, tolerance: float = 0.1, limit: float = 2.0) -> list[tuple[float, float, float]]:
    """(alpha, beta, gamma) >= 1 on a grid of `step` with alpha * beta^2 * gamma^2 within `tolerance` of 2."""
    values = [round(1.0 + step * i, 6) for i in range(int(1.0 / step) + 1)]
    return [
        (a, b, g)
        for a, b, g in itertools.product(values, repeat=3)
        if abs(flops_factor(a, b, g) - limit) <= tolerance
    ]
