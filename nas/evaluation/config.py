"""The reward's configuration and the names of the training-free scores; the task and the recipes are in
`nas.training.config`."""

from __future__ import annotations

from dataclasses import dataclass

from nas.evaluation.latency import LatencyProtocol

CONSTRAINTS = ("soft", "hard")
ZERO_COST_SCORES = ("naswot", "synflow", "grad_norm")


@dataclass(frozen=True)
class RewardConfig:
    """MnasNet's ACC x (COST/T)^w. The cost is FLOPs counted at `resolution` or, with `target_latency` (ms), the
    latency predicted under the `latency_*` protocol at `resolution`; candidates above `max_flops_ratio` x T are
    rejected without training."""

    target_flops: int | None = None
    resolution: int = 224
    constraint: str = "soft"
    w: float | None = None
    max_flops_ratio: float = 4.0
    target_latency: float | None = None
    latency_runtime: str = "eager"
    latency_batch: int = 1
    latency_threads: int = 1
    latency_device: str = "cpu"
    # Whole networks of the space the latency table's fit is calibrated on (nas.evaluation.latency_table).
    latency_calibration: int = 24

    @property
    def objective(self) -> str:
        """What the reward weighs accuracy against: flops or latency."""
        return "flops" if self.target_latency is None else "latency"

    @property
    def target(self) -> float:
        return self.target_flops if self.target_latency is None else self.target_latency

    @property
    def cost_limit(self) -> float:
        return self.max_flops_ratio * self.target

    @property
    def latency_protocol(self) -> LatencyProtocol:
        return LatencyProtocol(runtime=self.latency_runtime, threads=self.latency_threads, batch=self.latency_batch,
                               device=self.latency_device)
