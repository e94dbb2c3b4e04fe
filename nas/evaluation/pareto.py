"""Pareto fronts: the non-dominated points, maximising accuracy while minimising cost (FLOPs or params)."""

from __future__ import annotations

from collections.abc import Sequence


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
