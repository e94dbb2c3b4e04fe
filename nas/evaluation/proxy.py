"""Proxy training: the engine's proxy recipe on the train split, accuracy on the validation split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig
from nas.training.data import TaskData
from nas.training.engine import Trainer


@dataclass(frozen=True)
class ProxyResult:
    accuracy: float
    build_seconds: float
    train_seconds: float
    eval_seconds: float


def train_and_evaluate(
    spec: ArchSpec,
    data: TaskData,
    config: ProxyConfig,
    on_epoch: Callable[[int, int], None] | None = None,
) -> ProxyResult:
    """Train `spec` with the proxy recipe on the device that holds `data`, and return validation accuracy and
    timings. Same seed and device, same result."""
    start = time.perf_counter()
    trainer = Trainer(spec, data, config)
    build_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for epoch in range(config.epochs):
        trainer.train_epoch()
        if on_epoch is not None:
            on_epoch(epoch + 1, config.epochs)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = trainer.validation_accuracy()
    return ProxyResult(accuracy, build_seconds, train_seconds, time.perf_counter() - start)
