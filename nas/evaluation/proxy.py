"""Proxy training: the engine's proxy recipe on the train split, accuracy on the validation split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig
from nas.training.data import TaskData
from nas.training.engine import Trainer

# Successive halving's first rung: this many epochs of the proxy's own schedule.
FIRST_RUNG_EPOCHS = 1


@dataclass(frozen=True)
class ProxyResult:
    """Validation accuracy after `epochs` epochs of the proxy (fewer than the proxy's when halving stopped it)."""

    accuracy: float
    build_seconds: float
    train_seconds: float
    eval_seconds: float
    epochs: int
    first_rung_accuracy: float | None = None


def train_and_evaluate(
    spec: ArchSpec,
    data: TaskData,
    config: ProxyConfig,
    on_epoch: Callable[[int, int], None] | None = None,
    promote: Callable[[float], bool] | None = None,
) -> ProxyResult:
    """Train `spec` with the proxy recipe on the device that holds `data`, and return validation accuracy and
    timings. Same seed and device, same result.

    With `promote` (successive halving), the network is scored after FIRST_RUNG_EPOCHS epochs and goes on only if
    `promote(accuracy)` says so; it then continues from where it stopped, on the same schedule, so a promoted
    network ends exactly as one trained without halving (scoring changes neither its weights nor its data order)."""
    start = time.perf_counter()
    trainer = Trainer(spec, data, config)
    build_seconds = time.perf_counter() - start
    train_seconds = eval_seconds = 0.0
    first_rung = None
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        trainer.train_epoch()
        train_seconds += time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(epoch, config.epochs)
        if promote is not None and epoch == FIRST_RUNG_EPOCHS < config.epochs:
            start = time.perf_counter()
            first_rung = trainer.validation_accuracy()
            eval_seconds += time.perf_counter() - start
            if not promote(first_rung):
                return ProxyResult(first_rung, build_seconds, train_seconds, eval_seconds, epoch, first_rung)
    start = time.perf_counter()
    accuracy = trainer.validation_accuracy()
    eval_seconds += time.perf_counter() - start
    return ProxyResult(accuracy, build_seconds, train_seconds, eval_seconds, config.epochs, first_rung)
