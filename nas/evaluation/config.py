"""The reward's configuration and the names of the training-free scores; the task and the recipes are in
`nas.training.config`."""

from __future__ import annotations

from dataclasses import dataclass

CONSTRAINTS = ("soft", "hard")
ZERO_COST_SCORES = ("naswot", "synflow", "grad_norm")


@dataclass(frozen=True)
class RewardConfig:
    """MnasNet's ACC x (FLOPs/T)^w: FLOPs counted at `resolution`; candidates above `max_flops_ratio` x T are
    rejected without training."""

    target_flops: int
    resolution: int = 224
    constraint: str = "soft"
    w: float | None = None
    max_flops_ratio: float = 4.0

    @property
    def flops_limit(self) -> float:
        return self.max_flops_ratio * self.target_flops
