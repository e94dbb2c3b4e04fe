"""MnasNet's multi-objective reward: ACC x (FLOPs / T)^w."""

from __future__ import annotations

from nas.evaluation.config import CONSTRAINTS

SOFT_EXPONENT = -0.07
HARD_EXPONENT = -1.0


def reward_exponent(flops: float, target: float, constraint: str = "soft", w: float | None = None) -> float:
    """The exponent w for a candidate of `flops` against target `target`.

    Soft: the same w (default -0.07) on both sides of the target. Hard: 0 at or below the target, w (default -1)
    above it. An explicit `w` replaces the default exponent of either mode.
    """
    if constraint == "soft":
        return SOFT_EXPONENT if w is None else w
    if constraint == "hard":
        return 0.0 if flops <= target else (HARD_EXPONENT if w is None else w)
    raise ValueError(f"unknown constraint {constraint!r}; expected one of {', '.join(CONSTRAINTS)}")


def reward(accuracy: float, flops: float, target: float, constraint: str = "soft", w: float | None = None) -> float:
    """ACC x (FLOPs / target)^w, as a plain float."""
    if flops <= 0 or target <= 0:
        raise ValueError("FLOPs and target must be positive")
    return float(accuracy * (flops / target) ** reward_exponent(flops, target, constraint, w))
