"""Scaling rules: depth alpha^phi, width beta^phi, resolution gamma^phi.

Compound scaling takes alpha * beta^2 * gamma^2 ~ 2 (the paper's, a grid-fitted or the official table's); a
single-dimension rule is the same arithmetic with the other two coefficients at 1, so that each member phi has
about 2^phi times B0's FLOPs: width by 2^(phi/2), depth by 2^phi, resolution by 2^(phi/2).

A member of a family is its baseline spec with other global multipliers, resolution and dropout; depth and width
reach the network through the builder's official `round_repeats` / `round_filters`. Those roundings move FLOPs
by steps that are large for small networks, so a member's resolution is not simply rounded: of the resolutions
near base x gamma^phi it takes the one whose FLOPs come closest to what the rule promises. The functions here
return plain records (`effnas.records.FamilyMember`), which the database maps.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from effnas.records import FamilyMember
from nas.space.flops import count_flops, count_params
from nas.space.spec import OFFICIAL_COEFFICIENTS, ArchSpec, spec_to_dict

PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)
SOURCES = ("paper", "official", "grid")
RULES = ("compound", "width", "depth", "resolution")
# What `scaling.grow` scales by when given neither --rule nor --coefficients, and the measurement that choice rests
# on: bench/family_scaling.json's "default rule", at the longest budget measured (tests/scaling keep them in step).
DEFAULT_RULE = "compound"
DEFAULT_RULE_LABEL = "compound by the paper's coefficients (1.2, 1.1, 1.15)"
DEFAULT_RULE_BUDGET = "55,000 images x 15 epochs"
DEFAULT_RULE_BASIS = (f"at phi = 2 on Fashion-MNIST at 32 px, {DEFAULT_RULE_BUDGET}, the paper's coefficients beat "
                      "width alone and the grid-fitted ones beyond the seed spread (B2 test accuracy 0.9239 +- 0.0008 "
                      "against 0.9200 +- 0.0031 and 0.9200 +- 0.0017, 3 seeds each; bench/family_scaling.json); at "
                      "6,000 images x 8 epochs the grid and width alone had won")
# (alpha, beta, gamma) of the single-dimension rules: one step of phi doubles FLOPs through one dimension.
SINGLE_DIMENSION_COEFFICIENTS = {
    "width": (1.0, math.sqrt(2.0), 1.0),
    "depth": (2.0, 1.0, 1.0),
    "resolution": (1.0, 1.0, math.sqrt(2.0)),
}
OFFICIAL_BASE_RESOLUTION = OFFICIAL_COEFFICIENTS["efficientnet-b0"].resolution
# ImageNet-sized bases keep resolutions on multiples of 8 (as the official table does); below this base a step
# of 8 pixels is a large fraction of the image, so any whole number of pixels may be chosen.
COARSE_BASE_RESOLUTION = 128
RESOLUTION_DIVISOR = 8
# How far a member's resolution may stray from base x gamma^phi to absorb width and depth rounding.
RESOLUTION_WINDOW = 0.15
# The grid search's spacing of alpha, beta and gamma, and how far alpha*beta^2*gamma^2 may stray from 2.
GRID_STEP = 0.1
GRID_TOLERANCE = 0.1


def dropout_for(phi: int) -> float:
    """The official schedule: 0.2 for B0/B1, +0.1 every two steps, at most 0.5."""
    return min(0.5, 0.2 + 0.1 * (phi // 2))


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """How much one step of phi multiplies FLOPs: alpha * beta^2 * gamma^2."""
    return alpha * beta**2 * gamma**2


def rule_coefficients(rule: str, compound: tuple[float, float, float]) -> tuple[float, float, float]:
    """(alpha, beta, gamma) of a rule: `compound`'s own for compound scaling, else the single dimension's."""
    if rule == "compound":
        return compound
    if rule not in SINGLE_DIMENSION_COEFFICIENTS:
        raise ValueError(f"unknown scaling rule {rule!r}; choose from {', '.join(RULES)}")
    return SINGLE_DIMENSION_COEFFICIENTS[rule]


def scaled_spec(baseline: ArchSpec, width: float, depth: float, resolution: int, dropout: float) -> ArchSpec:
    """The baseline grown by these multipliers (they compose with any the baseline already has)."""
    return replace(baseline, width=baseline.width * width, depth=baseline.depth * depth, resolution=resolution,
                   dropout=dropout)


def fitted_resolution(baseline: ArchSpec, width: float, depth: float, resolution_mult: float,
                      flops_ratio: float, max_resolution: int | None = None) -> int:
    """The resolution near baseline.resolution x `resolution_mult` at which the baseline scaled by `width` and
    `depth` comes closest (in log FLOPs) to `flops_ratio` times the baseline's FLOPs. Without resolution scaling
    the base resolution stays; `max_resolution` caps it (never below the base), and a capped member has fewer
    FLOPs than the rule promises."""
    base = baseline.resolution
    if math.isclose(resolution_mult, 1.0):
        return base
    step = RESOLUTION_DIVISOR if base >= COARSE_BASE_RESOLUTION else 1
    ideal = base * resolution_mult
    low = max(base, math.floor(ideal * (1 - RESOLUTION_WINDOW) / step) * step)
    high = max(low, math.ceil(ideal * (1 + RESOLUTION_WINDOW) / step) * step)
    if max_resolution is not None:
        high = max(base, min(high, max_resolution))
        low = min(low, high)
    grown = scaled_spec(baseline, width, depth, base, baseline.dropout)
    target = math.log(flops_ratio * count_flops(baseline))

    def distance(resolution: int) -> tuple[float, float]:
        return abs(math.log(count_flops(grown, resolution)) - target), abs(resolution - ideal)

    return min(range(low, high + 1, step), key=distance)


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


def scaled_member_row(baseline: ArchSpec, alpha: float, beta: float, gamma: float, phi: int,
                      max_resolution: int | None = None) -> tuple[int, float, float, float, int, float]:
    """Member phi by these coefficients: (phi, width, depth, resolution multiplier, resolution, dropout)."""
    width, depth, resolution_mult = beta**phi, alpha**phi, gamma**phi
    resolution = fitted_resolution(baseline, width, depth, resolution_mult, flops_factor(alpha, beta, gamma) ** phi,
                                   max_resolution)
    return phi, width, depth, resolution_mult, resolution, dropout_for(phi)


def compound_members(baseline: ArchSpec, alpha: float, beta: float, gamma: float, phi_max: int,
                     max_resolution: int | None = None) -> list[FamilyMember]:
    """Members B0..B{phi_max} scaled by (alpha, beta, gamma), each at the resolution that follows the rule's FLOPs
    (at most `max_resolution`)."""
    return _members(baseline, [scaled_member_row(baseline, alpha, beta, gamma, phi, max_resolution)
                               for phi in range(phi_max + 1)])


def official_members(baseline: ArchSpec, phi_max: int, max_resolution: int | None = None) -> list[FamilyMember]:
    """Members from the published B0..B7 table. At 224 px the table's resolutions; at another base, the resolution
    near the table's ratio at which the member keeps its FLOPs ratio to B0 at 224 px. Either at most
    `max_resolution` (never below the base)."""
    if phi_max > 7:
        raise ValueError("the official table stops at B7 (--phi-max 7)")
    at_imagenet = replace(baseline, resolution=OFFICIAL_BASE_RESOLUTION)
    rows = []
    for phi in range(phi_max + 1):
        row = OFFICIAL_COEFFICIENTS[f"efficientnet-b{phi}"]
        mult = row.resolution / OFFICIAL_BASE_RESOLUTION
        if baseline.resolution == OFFICIAL_BASE_RESOLUTION:
            resolution = row.resolution if max_resolution is None else max(
                baseline.resolution, min(row.resolution, max_resolution))
        else:
            ratio = (count_flops(scaled_spec(at_imagenet, row.width, row.depth, row.resolution, row.dropout))
                     / count_flops(at_imagenet))
            resolution = fitted_resolution(baseline, row.width, row.depth, mult, ratio, max_resolution)
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
