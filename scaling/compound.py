"""Compound scaling: depth alpha^phi, width beta^phi, resolution gamma^phi, with alpha * beta^2 * gamma^2 ~ 2.

A member of a family is its baseline spec with other global multipliers, resolution and dropout; depth and width
reach the network through the builder's official `round_repeats` / `round_filters`. The functions here return
members as the database stores them (`db.families.FamilyMember`).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from db.families import FamilyMember
from nas.space.flops import count_flops, count_params
from nas.space.spec import OFFICIAL_COEFFICIENTS, ArchSpec, spec_to_dict

PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)
RESOLUTION_DIVISOR = 8
SOURCES = ("paper", "official", "grid")
OFFICIAL_BASE_RESOLUTION = OFFICIAL_COEFFICIENTS["efficientnet-b0"].resolution
# The grid search's spacing of alpha, beta and gamma, and how far alpha*beta^2*gamma^2 may stray from 2.
GRID_STEP = 0.1
GRID_TOLERANCE = 0.1


def round_resolution(value: float, divisor: int = RESOLUTION_DIVISOR) -> int:
    """Nearest multiple of `divisor` (at least one divisor)."""
    return max(divisor, int(value / divisor + 0.5) * divisor)


def dropout_for(phi: int) -> float:
    """The official schedule: 0.2 for B0/B1, +0.1 every two steps, at most 0.5."""
    return min(0.5, 0.2 + 0.1 * (phi // 2))


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """How much one step of phi multiplies FLOPs: alpha * beta^2 * gamma^2."""
    return alpha * beta**2 * gamma**2


def scaled_spec(baseline: ArchSpec, width: float, depth: float, resolution: int, dropout: float) -> ArchSpec:
    """The baseline grown by these multipliers (they compose with any the baseline already has)."""
    return replace(baseline, width=baseline.width * width, depth=baseline.depth * depth, resolution=resolution,
                   dropout=dropout)


def _members(baseline: ArchSpec, rows: list[tuple[int, float, float, float, int, float]]) -> list[FamilyMember]:
    """Members from (phi, width, depth, resolution multiplier, resolution, dropout) rows, the first being B0."""
    members = []
    for phi, width, depth, resolution_mult, resolution, dropout in rows:
        spec = scaled_spec(baseline, width, depth, resolution, dropout)
        flops = count_flops(spec)
        members.append(FamilyMember(
            name=f"B{phi}", phi=phi, width=width, depth=depth, resolution_mult=resolution_mult,
            resolution=resolution, dropout=dropout, params=count_params(spec), flops=flops,
            flops_ratio=flops / (members[0].flops if members else flops), arch=spec_to_dict(spec),
            block_strings=" ".join(spec.block_strings()),
        ))
    return members


def compound_members(baseline: ArchSpec, alpha: float, beta: float, gamma: float, phi_max: int) -> list[FamilyMember]:
    """Members B0..B{phi_max} by the paper's rule; resolutions rounded to a multiple of 8."""
    return _members(baseline, [
        (phi, beta**phi, alpha**phi, gamma**phi, round_resolution(baseline.resolution * gamma**phi), dropout_for(phi))
        for phi in range(phi_max + 1)
    ])


def official_members(baseline: ArchSpec, phi_max: int) -> list[FamilyMember]:
    """Members from the published B0..B7 table; resolutions relative to the baseline's (exact at 224)."""
    if phi_max > 7:
        raise ValueError("the official table stops at B7 (--phi-max 7)")
    rows = []
    for phi in range(phi_max + 1):
        row = OFFICIAL_COEFFICIENTS[f"efficientnet-b{phi}"]
        mult = row.resolution / OFFICIAL_BASE_RESOLUTION
        resolution = (row.resolution if baseline.resolution == OFFICIAL_BASE_RESOLUTION
                      else round_resolution(baseline.resolution * mult))
        rows.append((phi, row.width, row.depth, mult, resolution, row.dropout))
    return _members(baseline, rows)


def grid_points(step: float = GRID_STEP, tolerance: float = GRID_TOLERANCE,
                limit: float = 2.0) -> list[tuple[float, float, float]]:
    """(alpha, beta, gamma) >= 1 on a grid of `step` with alpha * beta^2 * gamma^2 within `tolerance` of 2."""
    values = [round(1.0 + step * i, 6) for i in range(int(1.0 / step) + 1)]
    return [
        (a, b, g)
        for a, b, g in itertools.product(values, repeat=3)
        if abs(flops_factor(a, b, g) - limit) <= tolerance
    ]
