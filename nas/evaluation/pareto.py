"""Pareto fronts: the non-dominated points, maximising accuracy while minimising cost (FLOPs or params), and the
hypervolume that measures a whole front in one number."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymoo.indicators.hv import HV


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points (lower cost, higher accuracy), ordered by increasing cost.

    A point is dominated when another has cost <= and accuracy >= with one of them strict. Sort by cost
    (ties: best accuracy first), then one sweep keeps each point that beats the best accuracy so far.
    """
    if len(costs) != len(accuracies):
        raise ValueError("costs and accuracies must have the same length")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i]))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front


def hypervolume(costs: Sequence[float], accuracies: Sequence[float], max_cost: float) -> float:
    """The share of the box [0, max_cost] x [0, 1] (cost x accuracy) that the points dominate, by pymoo's
    hypervolume indicator: 0 for no point under `max_cost`, 1 for a free network of accuracy 1.

    The reference point is fixed, (max_cost, accuracy 0), so that values of different searches on one task
    compare; points above `max_cost` add nothing.
    """
    if len(costs) != len(accuracies):
        raise ValueError("costs and accuracies must have the same length")
    if max_cost <= 0:
        raise ValueError("max_cost must be positive")
    points = [(c / max_cost, 1.0 - a) for c, a in zip(costs, accuracies) if c < max_cost and a > 0]
    if not points:
        return 0.0
    return float(HV(ref_point=np.array([1.0, 1.0]))(np.array(points)))


def hypervolume_curve(costs: Sequence[float], accuracies: Sequence[float], max_cost: float) -> list[float]:
    """The hypervolume after each of the points, in their order (a search's trials in trial order)."""
    return [hypervolume(costs[:n], accuracies[:n], max_cost) for n in range(1, len(costs) + 1)]
