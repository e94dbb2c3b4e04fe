"""Training a supernet of the search space (`nas.space.supernet`) with the one engine: BigNAS's sandwich rule
with in-place distillation. Each step trains the largest path on the labels, then the smallest and
`random_paths` uniformly drawn paths on the largest path's soft predictions, and takes one optimizer step over
the gradients of all of them. The engine's schedule, checkpoints, divergence error, threads and device apply.

A path is scored by `path_accuracy`: BatchNorm statistics re-estimated on the first training images, then
accuracy on the validation split, the way the proxy scores a trained candidate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.space.layout import NetworkLayout
from nas.space.search_space import SearchSpace
from nas.space.spec import ArchSpec
from nas.space.supernet import Supernet, SupernetPath, extreme_samples
from nas.training.config import ProxyConfig, SupernetConfig
from nas.training.data import TaskData
from nas.training.engine import Trainer


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution (the teacher's softmax), averaged over the batch."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


class SupernetTrainer(Trainer):
    """Trains a `Supernet` of `space` on the training split of `data` with the proxy's optimizer for
    `supernet.epochs` epochs; `state()` / `load_state()` resume it exactly. Same seed and device, same result."""

    def __init__(self, space: SearchSpace, data: TaskData, proxy: ProxyConfig, supernet: SupernetConfig) -> None:
        self.space = space
        self.config = supernet
        super().__init__(space.reference_spec(), data, replace(proxy, epochs=supernet.epochs, label_smoothing=0.0))
        largest, smallest = extreme_samples(space)
        self.largest = self.model.path(space.decode(largest))
        self.smallest = self.model.path(space.decode(smallest))
        self.choices = space.choices()

    def build_network(self) -> nn.Module:
        return Supernet(self.space, self.config.kernel_transform)

    def random_sample(self, generator: torch.Generator) -> dict[str, Any]:
        """A sample drawn uniformly from the space, each dimension of each stage independently, from `generator`."""
        picks = torch.randint(0, 2**31 - 1, (len(self.choices),), generator=generator).tolist()
        return {label: values[pick % len(values)] for (label, values), pick in zip(self.choices, picks)}

    def random_path(self) -> NetworkLayout:
        """A path drawn uniformly from the space, with the trainer's generator (so a resumed run draws the same)."""
        return self.model.path(self.space.decode(self.random_sample(self.generator)))

    def backward(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        with self._autocast():
            logits = self.model(images, self.largest)
            loss = F.cross_entropy(logits, labels)
        self.check_finite(loss, step)
        loss.backward()
        teacher = logits.detach().softmax(1)
        for layout in [self.smallest] + [self.random_path() for _ in range(self.config.random_paths)]:
            with self._autocast():
                distilled = soft_cross_entropy(self.model(images, layout), teacher)
            self.check_finite(distilled, step)
            distilled.backward()
        return loss

    def path_network(self, spec: ArchSpec) -> SupernetPath:
        return SupernetPath(self.model, self.model.path(spec))

    def path_accuracy(self, spec: ArchSpec) -> float:
        """Validation accuracy of `spec`'s path, after re-estimating its BatchNorm statistics."""
        network = self.path_network(spec)
        self.recalibrate(network, self.config.calibration_images)
        return self.accuracy(network, self.data.val)
