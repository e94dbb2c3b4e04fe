"""MnasNet's controller in plain PyTorch: a policy over the factorized choices, trained by REINFORCE.

One categorical distribution per decision (stage x dimension), independent of the others: with the few hundred
trials a search here affords, an LSTM's extra parameters would only slow learning down. Each update follows the
gradient of (reward - baseline) x log-probability of the sampled choices, with an exponential moving average of
the rewards as baseline and a small entropy bonus that keeps the policy from collapsing early. All randomness
comes from one seeded generator, so the same seed and rewards give the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class PolicyController:
    """Samples architectures (`{label: value}`) and learns from their rewards."""

    def __init__(self, choices: Sequence[tuple[str, Sequence[Any]]], seed: int, lr: float = 0.1,
                 baseline_decay: float = 0.9, entropy_weight: float = 1e-3) -> None:
        self.labels = [label for label, _ in choices]
        self.values = [list(values) for _, values in choices]
        self.logits = [torch.zeros(len(values), dtype=torch.float64, requires_grad=True) for values in self.values]
        self.optimizer = torch.optim.Adam(self.logits, lr=lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight

    def sample(self) -> dict[str, Any]:
        """One architecture drawn from the policy."""
        sample = {}
        for label, values, logits in zip(self.labels, self.values, self.logits):
            index = int(torch.multinomial(torch.softmax(logits.detach(), 0), 1, generator=self.generator))
            sample[label] = values[index]
        return sample

    def update(self, samples: Sequence[dict[str, Any]], rewards: Sequence[float]) -> None:
        """One policy-gradient step on a batch of sampled architectures and their rewards (in [0, 1])."""
        if not samples:
            return
        if self.baseline is None:
            self.baseline = sum(rewards) / len(rewards)
        loss = torch.zeros((), dtype=torch.float64)
        for sample, reward in zip(samples, rewards):
            log_probability = sum(
                torch.log_softmax(logits, 0)[values.index(sample[label])]
                for label, values, logits in zip(self.labels, self.values, self.logits)
            )
            loss = loss - (reward - self.baseline) * log_probability
        entropy = sum(-(torch.softmax(x, 0) * torch.log_softmax(x, 0)).sum() for x in self.logits)
        loss = loss / len(samples) - self.entropy_weight * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        for reward in rewards:
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward

    def probabilities(self) -> dict[str, dict[Any, float]]:
        """The policy now: per decision, the probability of each value."""
        return {
            label: dict(zip(values, torch.softmax(logits.detach(), 0).tolist()))
            for label, values, logits in zip(self.labels, self.values, self.logits)
        }
