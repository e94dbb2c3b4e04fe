"""Proxy training: the engine's proxy recipe on the train split, accuracy on the validation split."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig
from nas.training.data import TaskData
from nas.training.engine import Trainer, TrainingDiverged

# Successive halving's first rung: this many epochs of the proxy's own schedule.
FIRST_RUNG_EPOCHS = 1
# Training steps timed for an estimate, after one untimed step (the first pays for allocations).
TIMED_STEPS = 3
# A validation forward pass costs about this share of a training step on as many images.
FORWARD_SHARE = 1 / 3


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


def estimated_seconds(spec: ArchSpec, data: TaskData, config: ProxyConfig) -> float:
    """About how long `train_and_evaluate(spec, data, config)` takes here, from timing a few of its training
    steps: the network's build, its steps per epoch times the epochs, and the validation pass."""
    # Building a trainer seeds torch's global generator: what the caller draws next must not depend on this.
    with torch.random.fork_rng(devices=[data.device] if data.device.type == "cuda" else []):
        start = time.perf_counter()
        trainer = Trainer(spec, data, config)
        build_seconds = time.perf_counter() - start
        images, labels = next(iter(data.in_order(data.train, config.batch_size, config.batch_size)))
        images = images.contiguous(memory_format=torch.channels_last)
        times = []
        for step in range(TIMED_STEPS + 1):
            start = time.perf_counter()
            trainer.optimizer.zero_grad(set_to_none=True)
            try:
                trainer.backward(images, labels, step)
            except TrainingDiverged:  # its proxy training stops at the same step, after about its build
                return build_seconds
            trainer.optimizer.step()
            if data.device.type == "cuda":
                torch.cuda.synchronize(data.device)
            times.append(time.perf_counter() - start)
    step_seconds = statistics.median(times[1:])
    validation_steps = len(data.val) / config.batch_size
    return build_seconds + step_seconds * (trainer.steps_per_epoch * config.epochs + FORWARD_SHARE * validation_steps)
