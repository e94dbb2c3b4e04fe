"""Pareto fronts of a search: the non-dominated trials, maximising accuracy while minimising cost.

`pareto_front` is a plain O(n log n) function on points; `search_pareto` reads a search's trials from the
database (only the columns it needs) and applies it. The dashboard reuses both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import TrialRecord

COST_COLUMNS = ("flops", "params")


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


@dataclass(frozen=True)
class ParetoPoint:
    trial_id: int
    number: int
    cost: int
    accuracy: float
    reward: float | None


def search_pareto(session: Session, search_id: int, cost: str = "flops") -> list[ParetoPoint]:
    """The Pareto front (accuracy vs. `cost`, 'flops' or 'params') of a search's completed candidate trials."""
    if cost not in COST_COLUMNS:
        raise ValueError(f"cost must be one of {', '.join(COST_COLUMNS)}")
    column = getattr(TrialRecord, cost)
    rows = session.execute(
        select(TrialRecord.id, TrialRecord.number, column, TrialRecord.accuracy, TrialRecord.reward).where(
            TrialRecord.search_id == search_id,
            TrialRecord.role == "candidate",
            TrialRecord.status == "complete",
        )
    ).all()
    front = pareto_front([row[2] for row in rows], [row[3] for row in rows])
    return [ParetoPoint(*rows[i]) for i in front]
