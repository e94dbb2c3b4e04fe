"""Proxy training: a short, deterministic training run on the train split, accuracy on the validation split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from nas.evaluation.config import ProxyConfig
from nas.evaluation.data import ProxyData
from nas.space.builder import build_model
from nas.space.spec import ArchSpec

RECALIBRATION_IMAGES = 1024


@dataclass(frozen=True)
class ProxyResult:
    accuracy: float
    build_seconds: float
    train_seconds: float
    eval_seconds: float


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def proxy_spec(spec: ArchSpec, data: ProxyData) -> ArchSpec:
    # A few epochs underfit; dropout and stochastic depth would only slow the proxy down, so they are off here.
    return replace(
        spec, dropout=0.0, drop_connect=0.0, num_classes=data.num_classes, in_channels=data.in_channels,
        resolution=data.resolution,
    )


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
    # BatchNorm's TF momentum (0.01) leaves running statistics far from the data after a few hundred steps;
    # re-estimating them as an exact average over training images makes eval-mode accuracy meaningful.
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def train_and_evaluate(
    spec: ArchSpec,
    data: ProxyData,
    config: ProxyConfig,
    on_epoch: Callable[[int, int], None] | None = None,
) -> ProxyResult:
    """Train `spec` on the proxy task, on the device that holds `data`, and return validation accuracy and
    timings. Same seed and device, same result."""
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    model = build_model(proxy_spec(spec, data)).to(data.device, memory_format=torch.channels_last)
    build_seconds = time.perf_counter() - start

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    n = len(data.train_y)
    steps_per_epoch = max(1, n // config.batch_size)
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
            weight_decay=config.weight_decay,
        )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator).to(data.device)
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            images = data.train_x[index].contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(images), data.train_y[index], label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: loss became {loss.item()} in epoch {epoch + 1}, step {step + 1}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, config.epochs)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    recalibrate_batchnorm(model, data.train_x[:RECALIBRATION_IMAGES], config.eval_batch_size)
    model.eval()
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(data.val_y), config.eval_batch_size):
            images = data.val_x[begin : begin + config.eval_batch_size].contiguous(memory_format=torch.channels_last)
            logits = model(images)
            if not torch.isfinite(logits).all():
                raise TrainingDiverged("training diverged: the trained network outputs non-finite values")
            correct += int((logits.argmax(1) == data.val_y[begin : begin + config.eval_batch_size]).sum())
    eval_seconds = time.perf_counter() - start
    return ProxyResult(correct / len(data.val_y), build_seconds, train_seconds, eval_seconds)
