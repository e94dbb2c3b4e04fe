"""Training-free scores of an untrained network: a fraction of a second per candidate, to screen many candidates
and train only the most promising (`nas.search --prescreen`).

- `naswot`: NASWOT's log-determinant (Mellor et al., 2021), adapted to SiLU networks: each image's binary code is
  the sign of every SiLU's input, and the score is log|K| for the Hamming-similarity kernel K of a batch. Networks
  whose units separate the images well at initialisation score higher.
- `synflow`: SynFlow (Tanaka et al., 2020): sum of |θ ⊙ ∂R/∂θ| with R the output of the network with all weights
  made positive, on an all-ones input; data-free.
- `grad_norm`: the norm of the loss gradient on one batch.

Higher is better for all three. `bench/proxy_fidelity.py` measures how well each ranks trained networks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.evaluation.config import ZERO_COST_SCORES
from nas.space.builder import build_model
from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig
from nas.training.data import TaskData
from nas.training.engine import trained_spec

SCORE_BATCH = 64


def _untrained(spec: ArchSpec, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec)


def naswot(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """log|K| of the batch's activation-pattern kernel (train-mode BatchNorm, as in the paper)."""
    model = _untrained(spec, seed).train()
    codes: list[torch.Tensor] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        codes.append((inputs[0].detach().flatten(1) > 0).float())

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.SiLU)]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    patterns = torch.cat(codes, dim=1).double()
    kernel = patterns @ patterns.T + (1 - patterns) @ (1 - patterns).T
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf


def synflow(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """log of SynFlow's saliency sum: the products of absolute weights along every path, in float64 (they
    overflow float32 for deep networks). Eval-mode BatchNorm at initialisation is the identity."""
    model = _untrained(spec, seed).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.abs_()
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64)
    model(ones).sum().backward()
    with torch.no_grad():
        total = sum(float((p * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return math.log(total) if total > 0 else -math.inf


def grad_norm(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """Euclidean norm of the cross-entropy gradient over all weights, one batch, train mode."""
    model = _untrained(spec, seed).train()
    F.cross_entropy(model(images), labels).backward()
    squares = sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None)
    return math.sqrt(squares)


SCORERS: dict[str, Callable[[ArchSpec, torch.Tensor, torch.Tensor, int], float]] = dict(
    zip(ZERO_COST_SCORES, (naswot, synflow, grad_norm))
)


def zero_cost_score(name: str, spec: ArchSpec, data: TaskData, seed: int = 0) -> float:
    """Score `spec`, built as the proxy trains it, by the named score on the first SCORE_BATCH training images,
    on the CPU; ValueError for an unknown name."""
    if name not in SCORERS:
        raise ValueError(f"unknown zero-cost score {name!r}; choose one of {', '.join(ZERO_COST_SCORES)}")
    images, labels = next(data.in_order(data.train, SCORE_BATCH))
    return SCORERS[name](trained_spec(spec, data, ProxyConfig()), images.cpu(), labels.cpu(), seed)
