"""The one training engine: the proxy's short training and final training are two recipes of it.

One loop (`Trainer.train_epoch`), one evaluation pass (`Trainer.accuracy`, after BatchNorm re-estimation), one
divergence error. Per step: a batch from the data pipeline, the recipe's augmentation (final training: random
crop with padding, optional horizontal flip, random erasing, all on the batch at once), the loss with the
recipe's label smoothing, the optimizer, PyTorch's schedule and, for final training, an EMA of the weights
(`AveragedModel`). The proxy recipe trains with AdamW or Nesterov SGD on a one-cycle schedule and is scored
once, at the end; final training (Nesterov SGD, linear warm-up then cosine, no weight decay on BatchNorm and
biases, bf16 autocast on CUDA) scores both the raw and the EMA weights after every epoch and keeps the best.

All randomness (shuffling, augmentation, dropout) comes from generators whose states are part of the trainer's
state, so a run resumed from a checkpoint continues exactly as it would have. Given a `Distributed` job (processes
started by torchrun), the trainer trains data-parallel as `nas.training.distributed` describes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, OneCycleLR, SequentialLR
from torch.optim.swa_utils import AveragedModel

from nas.space.builder import build_model
from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig, TrainingRecipe
from nas.training.data import Split, TaskData
from nas.training.distributed import Distributed

Recipe = ProxyConfig | TrainingRecipe
RECALIBRATION_IMAGES = 1024
# The evaluation batch of a recipe is meant at 32 px; larger images get the same pixels per batch.
EVAL_BATCH_RESOLUTION = 32


class TrainingDiverged(RuntimeError):
    """The loss, or the trained network's output, became NaN or infinite."""


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float
    val_accuracy: float
    val_accuracy_ema: float | None
    seconds: float
    images_per_second: float

    def point(self) -> dict[str, float]:
        return asdict(self)


def trained_spec(spec: ArchSpec, data: TaskData, recipe: Recipe) -> ArchSpec:
    """The network as a recipe trains it: the task's classes and channels at the data's resolution. The proxy
    turns dropout and stochastic depth off (a few epochs underfit; they would only slow it down); final training
    keeps the member's dropout, as scaled, and uses the recipe's drop-connect."""
    task = dict(num_classes=data.num_classes, in_channels=data.in_channels, resolution=data.resolution)
    if isinstance(recipe, ProxyConfig):
        return replace(spec, dropout=0.0, drop_connect=0.0, **task)
    return replace(spec, drop_connect=recipe.drop_connect, **task)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    """Linear warm-up from 1/warmup_steps of the peak to the peak, then cosine decay to zero at `total_steps`."""
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1 / warmup_steps, total_iters=max(0, warmup_steps - 1))
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for parameter in model.parameters():
        # BatchNorm scales and shifts and all biases are vectors: weight decay would only pull them to zero.
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if isinstance(recipe, TrainingRecipe):
        return torch.optim.SGD(_parameter_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                           weight_decay=recipe.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int) -> LRScheduler:
    total = recipe.epochs * steps_per_epoch
    if isinstance(recipe, TrainingRecipe):
        return warmup_cosine(optimizer, recipe.warmup_epochs * steps_per_epoch, total)
    return OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total, pct_start=0.2)


def _tf_ema(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """TensorFlow's EMA: the decay warms up as (1 + step) / (10 + step) until it reaches `decay`."""

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        step = int(count)
        rate = min(decay, (1 + step) / (10 + step))
        for mean, value in zip(averaged, current):
            mean.mul_(rate).add_(value.detach(), alpha=1 - rate)

    return average


def augment(images: torch.Tensor, generator: torch.Generator, *, padding: int, flip: bool, erasing: float,
            fill: torch.Tensor) -> torch.Tensor:
    """Random crop with `padding` (padded with `fill`, the normalised black), optional horizontal flip and random
    erasing (probability `erasing`, 2-25 % of the image, filled with the mean), all on one batch at once."""
    n, c, h, w = images.shape
    device = images.device
    padded = fill.view(1, c, 1, 1).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding:padding + h, padding:padding + w] = images
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    rows = (torch.arange(h, device=device)[None, :] + dy[:, None])[:, None, :, None].expand(n, c, h, w)
    cols = (torch.arange(w, device=device)[None, :] + dx[:, None])[:, None, None, :].expand(n, c, h, w)
    batch = torch.arange(n, device=device)[:, None, None, None].expand(n, c, h, w)
    channel = torch.arange(c, device=device)[None, :, None, None].expand(n, c, h, w)
    out = padded[batch, channel, rows, cols]
    if flip:
        flipped = torch.rand(n, generator=generator).to(device) < 0.5
        out = torch.where(flipped[:, None, None, None], out.flip(3), out)
    if erasing > 0:
        out = out.masked_fill(_erasing_mask(n, h, w, erasing, generator)[:, None].to(device), 0.0)
    return out


def _erasing_mask(n: int, h: int, w: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    erase = torch.rand(n, generator=generator) < probability
    area = torch.empty(n).uniform_(0.02, 0.25, generator=generator) * h * w
    ratio = torch.exp(torch.empty(n).uniform_(math.log(0.3), math.log(3.3), generator=generator))
    eh = (area * ratio).sqrt().round().clamp(1, h).long()
    ew = (area / ratio).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).long()
    r = torch.arange(h)[None, :, None]
    q = torch.arange(w)[None, None, :]
    return ((r >= top[:, None, None]) & (r < (top + eh)[:, None, None]) & (q >= left[:, None, None])
            & (q < (left + ew)[:, None, None]) & erase[:, None, None])


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class Trainer:
    """Trains one network on one task with one recipe, on the device that holds the data; `state()` and
    `load_state()` make it resumable. Same seed and device, same result."""

    def __init__(self, spec: ArchSpec, data: TaskData, recipe: Recipe, job: Distributed | None = None) -> None:
        self.data = data
        self.recipe = recipe
        self.job = job
        self.device = data.device
        self.final = isinstance(recipe, TrainingRecipe)
        self.spec = trained_spec(spec, data, recipe)
        torch.manual_seed(recipe.seed)
        self.model = self.build_network().to(self.device, memory_format=torch.channels_last)
        self.ema: AveragedModel | None = None
        if self.final:
            # The official classifier init (uniform 1/sqrt(classes)) starts ten-class logits so large that the first
            # epochs are spent shrinking them; starting from zero logits trains faster and steadier here.
            nn.init.zeros_(self.model.classifier.weight)
            self.ema = AveragedModel(self.model, multi_avg_fn=_tf_ema(recipe.ema_decay), use_buffers=False)
        self.generator = torch.Generator().manual_seed(recipe.seed)
        # One process draws shuffling and augmentation from one generator; ranks share the shuffling generator
        # and each augments from its own stream.
        self.augment_generator = self.generator if job is None else torch.Generator()
        self.trained_model: nn.Module = self.model
        if job is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.trained_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index or 0] if self.device.type == "cuda" else None)
        self.steps_per_epoch = max(1, len(data.train) // recipe.batch_size)
        self.optimizer = _optimizer(self.model, recipe)
        self.schedule = _schedule(self.optimizer, recipe, self.steps_per_epoch)
        self.eval_batch_size = max(1, min(recipe.eval_batch_size, recipe.eval_batch_size * EVAL_BATCH_RESOLUTION**2
                                          // data.resolution**2))
        # Black pixels after normalisation: what the crop pads with.
        self.black = torch.tensor([-m / s for m, s in zip(data.mean, data.std)], device=self.device)
        self.epoch = 0
        self.best: dict[str, Any] = {"accuracy": -1.0, "epoch": None, "weights": None, "state": None}

    def build_network(self) -> nn.Module:
        """The network this trainer trains, before it moves to the device."""
        return build_model(self.spec)

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.final and self.device.type == "cuda")

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        if not self.final:
            return images
        return augment(images, self.augment_generator, padding=max(1, self.data.resolution // 8), flip=self.recipe.flip,
                       erasing=self.recipe.erasing, fill=self.black)

    def train_epoch(self, on_step: Callable[[int, int, float], None] | None = None) -> tuple[float, float]:
        """One epoch over the training split: its mean loss and images per second."""
        start = time.perf_counter()
        self.model.train()
        total_loss = 0.0
        shard = None
        if self.job is not None:
            shard = self.job.batch_slice
            seed = self.job.stream_seed(self.recipe.seed, self.epoch)
            self.augment_generator.manual_seed(seed)
            torch.manual_seed(seed)
        batches = self.data.shuffled(self.data.train, self.generator, self.recipe.batch_size, self.steps_per_epoch,
                                     shard)
        for step, (images, labels) in enumerate(batches):
            images = self._augment(images).contiguous(memory_format=torch.channels_last)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.backward(images, labels, step)
            self.optimizer.step()
            self.schedule.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            # Reading the loss waits for the device; the proxy, scored by accuracy alone, skips it when unwatched.
            if self.final or on_step is not None:
                total_loss += loss.item()
            if on_step is not None:
                on_step(step + 1, self.steps_per_epoch, total_loss / (step + 1))
        self.epoch += 1
        if self.job is not None:
            total_loss = self.job.total(total_loss) / self.job.world_size
        seconds = time.perf_counter() - start
        return total_loss / self.steps_per_epoch, self.steps_per_epoch * self.recipe.batch_size / seconds

    def backward(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        """The loss of one batch, its gradients accumulated; TrainingDiverged when it is not finite."""
        with self._autocast():
            loss = F.cross_entropy(self.trained_model(images), labels, label_smoothing=self.recipe.label_smoothing)
        self.check_finite(loss, step)
        loss.backward()
        return loss

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged: loss became {loss.item()} in epoch {self.epoch + 1}, step {step + 1}")

    @torch.no_grad()
    def recalibrate(self, model: nn.Module, images: int = RECALIBRATION_IMAGES) -> None:
        """Re-estimate BatchNorm statistics as an exact average over the first training images: TF's slow momentum
        (0.01) leaves them far from the data after a few hundred steps, and an EMA's averaged weights do not
        match the raw network's statistics at all."""
        norms = batchnorm_layers(model)
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for batch, _ in self.data.in_order(self.data.train, self.eval_batch_size, images):
            with self._autocast():
                model(batch.contiguous(memory_format=torch.channels_last))
        for m, momentum in zip(norms, saved):
            m.momentum = momentum

    @torch.no_grad()
    def accuracy(self, model: nn.Module, split: Split) -> float:
        """Accuracy of `model` in eval mode on a split."""
        model.eval()
        correct, finite = 0, True
        shard = self.job.eval_shard if self.job is not None else None
        for images, labels in self.data.in_order(split, self.eval_batch_size, shard=shard):
            with self._autocast():
                logits = model(images.contiguous(memory_format=torch.channels_last))
            finite = finite and bool(torch.isfinite(logits).all())
            correct += int((logits.argmax(1) == labels).sum())
        if self.job is not None:
            # Every rank takes part in both sums, so a rank that saw a non-finite output cannot leave the others
            # waiting in the next collective.
            correct = int(self.job.total(correct))
            finite = self.job.total(float(not finite)) == 0
        if not finite:
            raise TrainingDiverged("training diverged: the trained network outputs non-finite values")
        return correct / len(split)

    def validation_accuracy(self, model: nn.Module | None = None) -> float:
        """Validation accuracy of `model` (default: the raw network) after BatchNorm re-estimation."""
        model = self.model if model is None else model
        self.recalibrate(model)
        return self.accuracy(model, self.data.val)

    def fit_epoch(self, on_step: Callable[[int, int, float], None] | None = None) -> EpochResult:
        """One epoch, then the raw and (where the recipe keeps one) the EMA weights scored on the validation
        split; the best weights so far are kept."""
        start = time.perf_counter()
        loss, images_per_second = self.train_epoch(on_step)
        raw = self.validation_accuracy()
        ema = self.validation_accuracy(self.ema.module) if self.ema is not None else None
        scored = [("raw", raw, self.model)] + ([("ema", ema, self.ema.module)] if self.ema is not None else [])
        for weights, value, model in scored:
            if value > self.best["accuracy"]:
                state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                self.best = {"accuracy": value, "epoch": self.epoch, "weights": weights, "state": state}
        return EpochResult(self.epoch, loss, raw, ema, time.perf_counter() - start, images_per_second)

    def best_model(self) -> nn.Module:
        """The network with the weights the validation split chose (raw or EMA, at its best epoch), on the CPU."""
        model = build_model(self.spec)
        model.load_state_dict(self.best["state"])
        return model.eval()

    def test_accuracy(self) -> float:
        """The chosen weights on the test split: call once, at the end."""
        model = self.best_model().to(self.device, memory_format=torch.channels_last)
        return self.accuracy(model, self.data.test)

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(), "best": self.best,
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if "schedule" not in state:
            raise ValueError("the checkpoint was written by an earlier effnas, whose trainer this one cannot "
                             "continue; train the network again")
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.best = state["best"]
