"""The full training recipe: what a practitioner would train these networks with, epoch by epoch, resumable.

SGD with Nesterov momentum, linear warm-up then cosine decay per step, no weight decay on BatchNorm and biases,
label smoothing, an EMA of the weights, batched augmentation on tensors (random crop with padding, optional
horizontal flip, random erasing), the member's dropout and stochastic depth, channels-last, bf16 autocast on
CUDA. After every epoch both the raw and the EMA weights are scored on the validation split; the best of them is
kept, and only that one is ever scored on the test split, once, at the end.

All randomness (shuffling, augmentation, dropout) comes from generators whose states are part of the trainer's
state, so a run resumed from a checkpoint continues exactly as it would have.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.evaluation.config import TrainingRecipe
from nas.evaluation.data import FinalData
from nas.evaluation.proxy import RECALIBRATION_IMAGES, recalibrate_batchnorm
from nas.space.builder import build_model
from nas.space.spec import ArchSpec


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float
    val_accuracy: float
    val_accuracy_ema: float
    seconds: float
    images_per_second: float

    def point(self) -> dict[str, float]:
        return asdict(self)


def trained_spec(spec: ArchSpec, data: FinalData, recipe: TrainingRecipe) -> ArchSpec:
    """The member as trained: the task's classes and channels, at the data's resolution, with the recipe's
    drop-connect (its dropout is the member's own, as scaled)."""
    return replace(spec, num_classes=data.num_classes, in_channels=data.in_channels, resolution=data.resolution,
                   drop_connect=recipe.drop_connect)


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for parameter in model.parameters():
        # BatchNorm scales and shifts and all biases are vectors: weight decay would only pull them to zero.
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    out = _crop(padded, rows, cols)
    if flip:
        flipped = torch.rand(n, generator=generator).to(device) < 0.5
        out = torch.where(flipped[:, None, None, None], out.flip(3), out)
    if erasing > 0:
        erase = torch.rand(n, generator=generator) < erasing
        area = torch.empty(n).uniform_(0.02, 0.25, generator=generator) * h * w
        ratio = torch.exp(torch.empty(n).uniform_(math.log(0.3), math.log(3.3), generator=generator))
        eh = (area * ratio).sqrt().round().clamp(1, h).long()
        ew = (area / ratio).sqrt().round().clamp(1, w).long()
        top = (torch.rand(n, generator=generator) * (h - eh + 1)).long()
        left = (torch.rand(n, generator=generator) * (w - ew + 1)).long()
        r = torch.arange(h)[None, :, None]
        q = torch.arange(w)[None, None, :]
        mask = ((r >= top[:, None, None]) & (r < (top + eh)[:, None, None]) & (q >= left[:, None, None])
                & (q < (left + ew)[:, None, None]) & erase[:, None, None])
        out = out.masked_fill(mask[:, None].to(device), 0.0)
    return out


def _crop(padded: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    n, c, h, w = rows.shape
    batch = torch.arange(n, device=padded.device)[:, None, None, None].expand(n, c, h, w)
    channel = torch.arange(c, device=padded.device)[None, :, None, None].expand(n, c, h, w)
    return padded[batch, channel, rows, cols]


class _Ema:
    """An exponential moving average of the weights (buffers copied), with TF's warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema, raw in zip(self.model.parameters(), model.parameters()):
            ema.mul_(decay).add_(raw.detach(), alpha=1 - decay)
        for ema, raw in zip(self.model.buffers(), model.buffers()):
            ema.copy_(raw)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Trainer:
    """Trains one network on one task with one recipe; `state()` and `load_state()` make it resumable."""

    def __init__(self, spec: ArchSpec, data: FinalData, recipe: TrainingRecipe, device: str) -> None:
        self.data = data
        self.recipe = recipe
        self.device = torch.device(device)
        self.spec = trained_spec(spec, data, recipe)
        torch.manual_seed(recipe.seed)
        self.model = build_model(self.spec).to(self.device, memory_format=torch.channels_last)
        # The official classifier init (uniform 1/sqrt(classes)) starts ten-class logits so large that the first
        # epochs are spent shrinking them; starting from zero logits trains faster and steadier here.
        nn.init.zeros_(self.model.classifier.weight)
        self.ema = _Ema(self.model, recipe.ema_decay)
        self.optimizer = torch.optim.SGD(_parameter_groups(self.model, recipe.weight_decay), lr=recipe.lr,
                                         momentum=recipe.momentum, nesterov=True)
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.steps_per_epoch = max(1, len(data.train_y) // recipe.batch_size)
        self.epoch = 0
        self.best: dict[str, Any] = {"accuracy": -1.0, "epoch": None, "weights": None, "state": None}
        self.fill = torch.tensor([-m / s for m, s in zip(data.mean, data.std)], device=self.device)
        self.train_x = data.train_x.to(self.device)
        self.train_y = data.train_y.to(self.device)

    def _lr(self, step: int) -> float:
        warmup = self.recipe.warmup_epochs * self.steps_per_epoch
        total = self.recipe.epochs * self.steps_per_epoch
        if step < warmup:
            return self.recipe.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return self.recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def train_epoch(self, on_step: Callable[[int, int, float], None] | None = None) -> EpochResult:
        """One epoch over the training split, then both weights scored on the validation split."""
        recipe = self.recipe
        start = time.perf_counter()
        self.model.train()
        order = torch.randperm(len(self.train_y), generator=self.generator).to(self.device)
        padding = max(1, self.data.resolution // 8)
        total_loss = 0.0
        for step in range(self.steps_per_epoch):
            global_step = self.epoch * self.steps_per_epoch + step
            for group in self.optimizer.param_groups:
                group["lr"] = self._lr(global_step)
            index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            images = augment(self.train_x[index], self.generator, padding=padding, flip=recipe.flip,
                             erasing=recipe.erasing, fill=self.fill).contiguous(memory_format=torch.channels_last)
            with self._autocast():
                loss = F.cross_entropy(self.model(images), self.train_y[index],
                                       label_smoothing=recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss became {loss.item()} in epoch {self.epoch + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.ema.update(self.model, global_step)
            total_loss += loss.item()
            if on_step is not None:
                on_step(step + 1, self.steps_per_epoch, total_loss / (step + 1))
        train_seconds = time.perf_counter() - start
        self.epoch += 1
        raw = self.accuracy(self.model, self.data.val_x, self.data.val_y, recalibrate=True)
        ema = self.accuracy(self.ema.model, self.data.val_x, self.data.val_y, recalibrate=True)
        for weights, value, model in (("raw", raw, self.model), ("ema", ema, self.ema.model)):
            if value > self.best["accuracy"]:
                state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                self.best = {"accuracy": value, "epoch": self.epoch, "weights": weights, "state": state}
        return EpochResult(self.epoch, total_loss / self.steps_per_epoch, raw, ema, time.perf_counter() - start,
                           self.steps_per_epoch * recipe.batch_size / train_seconds)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, recalibrate: bool = False) -> float:
        """Accuracy of `model` in eval mode; with `recalibrate`, its BatchNorm statistics are first re-estimated on
        training images (TF's slow BatchNorm momentum lags the weights, and the EMA's averaged weights do not
        match the raw network's running statistics at all)."""
        if recalibrate:
            recalibrate_batchnorm(model, self.train_x[:RECALIBRATION_IMAGES], self.recipe.eval_batch_size)
        model.eval()
        correct = 0
        for begin in range(0, len(labels), self.recipe.eval_batch_size):
            batch = images[begin:begin + self.recipe.eval_batch_size].to(self.device)
            with self._autocast():
                logits = model(batch.contiguous(memory_format=torch.channels_last))
            correct += int((logits.argmax(1).cpu() == labels[begin:begin + self.recipe.eval_batch_size].cpu()).sum())
        return correct / len(labels)

    def best_model(self) -> nn.Module:
        """The network with the weights the validation split chose (raw or EMA, at its best epoch), on the CPU."""
        model = build_model(self.spec)
        model.load_state_dict(self.best["state"])
        return model.eval()

    def test_accuracy(self) -> float:
        """The chosen weights on the test split: call once, at the end."""
        model = self.best_model().to(self.device, memory_format=torch.channels_last)
        return self.accuracy(model, self.data.test_x, self.data.test_y)

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "best": self.best,
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.best = state["best"]
