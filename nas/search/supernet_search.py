"""Supernet scoring in a search (`--evaluator supernet`): the stored supernet of the task and space (trained here
when there is none, continued from its checkpoint when a run stopped), every candidate scored on it, then the
candidates with the best supernet rewards proxy-trained. Only those can win.

A supernet is defined by the task (data set, folder, subset, validation fraction), the resolution it trains at,
the stem stride, the classes and channels, the space's pinned dimensions, the optimizer recipe and its own
training settings. A search whose definition matches a stored, complete supernet reuses it, whatever its FLOPs
target, so searching a second target costs no supernet training.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from db import Database, supernets, trials
from effnas.cli import UsageError, format_duration
from effnas.records import Supernet, TrainingStatus, TrialInfo
from nas.evaluation.evaluator import error_line
from nas.evaluation.proxy import estimated_seconds
from nas.evaluation.supernet import SupernetEvaluator
from nas.search.config import SearchConfig
from nas.search.study import Study, search_space
from nas.space.search_space import SearchSpace
from nas.space.spec import spec_from_dict
from nas.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from nas.training.data import TaskData
from nas.training.supernet import SupernetTrainer
from nas.training.weights import sha256_of

SUPERNETS_DIR = Path(".effnas") / "supernets"
WEIGHTS_NAME = "supernet.pt"
# Without a reference training to time, the proxy trainings at the end get this share of the time budget until
# the search nears it; from there on, the time the best candidates' trainings are estimated to take, times a margin:
# bench/proxy_time_estimate.py measured trainings at 0.92-1.12 x their estimates, but inside a search they ran to
# about 1.3 x, and the last candidate scored ends past the point (at 1.25 a 9-minute run trained 2 of its best 3).
RESERVE_SHARE = 0.25
RESERVE_MARGIN = 1.5
# Candidates scored per one proxy-trained, even when the supernet's training took the whole time budget (a search
# on a slow machine would otherwise hand over nothing): scoring costs about a second a candidate at 32 px.
MIN_SCORED_PER_TRAINED = 10
# Paths whose median accuracy is under this multiple of chance rank close to randomly: bench/supernet_fidelity.json
# measured Kendall tau 0.02-0.08 against the proxy for a whole-space supernet whose paths scored 0.11 on ten classes.
NEAR_CHANCE = 2.0


def supernet_definition(config: SearchConfig, space: SearchSpace) -> dict[str, Any]:
    """What makes two supernets the same: everything that changes its weights (not the threads or the device,
    and not the images a path's statistics are re-estimated on, which only scoring reads)."""
    task, proxy = config.task, config.proxy
    training = {k: v for k, v in config.supernet.to_dict().items() if k != "calibration_images"}
    return {
        "dataset": task.dataset, "data_dir": task.data_dir, "subset": task.subset, "val_fraction": task.val_fraction,
        "resolution": proxy.resolution, "stem_stride": space.stem_stride, "classes": space.num_classes,
        "in_channels": space.in_channels, "fixed": {key: space.fixed[key] for key in sorted(space.fixed)},
        "optimizer": {name: getattr(proxy, name) for name in ("optimizer", "batch_size", "lr", "momentum",
                                                              "weight_decay", "seed")},
        "supernet": training,
    }


def supernet_key(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


def stored_weights(supernet: Supernet) -> dict[str, torch.Tensor]:
    """The weights of a complete stored supernet; UsageError when its file is missing or not what was stored."""
    path = Path(supernet.weights_path or "")
    where = f"supernet {supernet.id}'s weights file {path}"
    if not path.is_file():
        raise UsageError(f"{where} is missing; restore it, or delete the supernet's row to train it again")
    if sha256_of(path) != supernet.weights_sha256:
        raise UsageError(f"{where} is corrupt (its SHA-256 differs from the stored one); restore it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file with the stored checksum that torch cannot read is corrupt all the same
        raise UsageError(f"{where} cannot be read: {error_line(exc)}") from None


def check_stored_supernet(db: Database, config: SearchConfig, data: TaskData) -> None:
    """Before a supernet search is stored: UsageError when the supernet it would reuse has a missing or corrupt
    weights file."""
    if config.evaluator != "supernet":
        return
    space = search_space(config, data.num_classes, data.in_channels)
    stored = supernets.find_supernet(db, supernet_key(supernet_definition(config, space)))
    if stored is not None and stored.status is TrainingStatus.COMPLETE:
        stored_weights(stored)


def overrun_note(epochs_left: int, seconds_per_epoch: float, elapsed: float, time_budget: float | None) -> str | None:
    """A note when the supernet's remaining epochs run the search past its time budget (which the supernet's
    training does not stop at: a supernet cut short would be stored half-trained for every later search), with the
    --supernet-epochs that trains one in about half the budget; None when it fits or no epoch is left."""
    if time_budget is None or epochs_left < 1 or elapsed + epochs_left * seconds_per_epoch <= time_budget:
        return None
    fitting = int(time_budget / 2 // seconds_per_epoch)
    advice = (f"--supernet-epochs {fitting} trains one in about half of it" if fitting >= 1 else
              "even one epoch takes more than half of it; give a longer --time-budget")
    return (f"note: the supernet's {epochs_left} remaining epoch(s) take about "
            f"{format_duration(epochs_left * seconds_per_epoch)}, so this search runs past its time budget "
            f"({format_duration(time_budget)}); the supernet is stored, and later searches on this task reuse it "
            f"whatever their target. On this machine {advice}.")


def _train(study: Study, trainer: SupernetTrainer, stored: Supernet, folder: Path) -> None:
    """Train (or continue) the supernet epoch by epoch, a checkpoint and a stored point after each."""
    db, events = study.db, study.events
    checkpoint = folder / CHECKPOINT_NAME
    curve: list[dict[str, Any]] = []
    if checkpoint.is_file():
        state, curve = load_checkpoint(checkpoint, trainer.device)
        trainer.load_state(state)
    epochs = trainer.recipe.epochs
    warned = False
    while trainer.epoch < epochs:
        epoch_start = time.monotonic()
        trainer.train_epoch(on_step=lambda step, steps, loss: events.supernet_step(trainer.epoch + 1, epochs,
                                                                                    step, steps))
        seconds = time.monotonic() - epoch_start
        curve.append({"epoch": trainer.epoch, "seconds": seconds})
        save_checkpoint(checkpoint, trainer.state(), curve)
        supernets.record_epoch(db, stored.id, curve[-1], str(checkpoint))
        events.supernet_epoch(trainer.epoch, epochs, seconds * (epochs - trainer.epoch))
        if not warned and (overrun := overrun_note(epochs - trainer.epoch, seconds, study.elapsed(),
                                                   study.config.time_budget)):
            events.note(overrun)
            warned = True
    weights = folder / WEIGHTS_NAME
    partial = weights.with_name(weights.name + ".partial")
    torch.save(trainer.model.state_dict(), partial)
    os.replace(partial, weights)
    supernets.finish_supernet(db, stored.id, str(weights.resolve()), sha256_of(weights),
                              sum(point["seconds"] for point in curve))
    # The weights are all a complete supernet needs; its optimizer state would more than double what it keeps.
    checkpoint.unlink()


def obtain_supernet(study: Study, folder: Path = SUPERNETS_DIR) -> SupernetTrainer:
    """The search's supernet: the stored one when complete, else trained here (continued where a run stopped)."""
    config, db = study.config, study.db
    definition = supernet_definition(config, study.space)
    key = supernet_key(definition)
    trainer = SupernetTrainer(study.space, study.evaluator.data, config.proxy, config.supernet)
    stored = supernets.find_supernet(db, key)
    if stored is not None and stored.status is TrainingStatus.COMPLETE:
        trainer.model.load_state_dict(stored_weights(stored))
        study.events.note(f"supernet {stored.id}: reusing its {stored.epochs} trained epoch(s) "
                          f"({stored.seconds:.0f} s of training)")
        return trainer
    if stored is None:
        stored = supernets.create_supernet(db, Supernet(key, definition, config.task.dataset, config.proxy.resolution,
                                                        study.space.stem_stride, config.supernet.epochs), study.worker)
    else:
        supernets.resume_supernet(db, stored.id, study.worker)
    target = folder / key[:16]
    target.mkdir(parents=True, exist_ok=True)
    try:
        _train(study, trainer, stored, target)
    except KeyboardInterrupt:
        supernets.stop_supernet(db, stored.id, TrainingStatus.INTERRUPTED, "interrupted by the user (Ctrl-C)")
        raise
    except Exception as exc:
        supernets.stop_supernet(db, stored.id, TrainingStatus.FAILED, error_line(exc))
        raise
    return trainer


def prepare_supernet_scoring(study: Study) -> None:
    """Score the study's candidates on its supernet from now on, and keep back the time its best candidates'
    proxy trainings will take: as long as the reference's, each, or a share of the budget without one."""
    config = study.config
    study.scorer = SupernetEvaluator(config.reward, config.proxy, study.evaluator.data, obtain_supernet(study),
                                     study.evaluator.latency_table)
    if config.time_budget is None:
        return
    reference = trials.reference_trial(study.db, study.search_id)
    seconds = None if reference is None else reference.train_seconds
    first_guess = config.proxy_trained * seconds if seconds else RESERVE_SHARE * config.time_budget
    study.held_back = ProxyTrainingReserve(study, first_guess)
    study.min_candidates = MIN_SCORED_PER_TRAINED * config.proxy_trained
    note = no_scoring_note(study.elapsed(), config.time_budget, first_guess, study.min_candidates)
    if note:
        study.events.note(note)


class ProxyTrainingReserve:
    """The seconds a supernet search keeps back for proxy-training its best candidates. Until the search nears
    its end, `first_guess`; from there on, what the proxy trainings of the best candidates so far are estimated to
    take, timed on a few steps of each (the reference, the first guess's yardstick, trains for many times as long
    as the small candidates the supernet favours: the tutorial's search kept 201 s for 44 s of trainings)."""

    def __init__(self, study: Study, first_guess: float) -> None:
        self.study = study
        self.first_guess = first_guess
        self._seconds: dict[str, float] = {}

    def __call__(self) -> float:
        study = self.study
        time_budget = study.config.time_budget
        if time_budget is None or study.elapsed() < time_budget - self.first_guess:
            return self.first_guess
        best = [t for t in trials.best_supernet_scored(study.db, study.search_id, study.config.proxy_trained)
                if t.partial]
        if not best:
            return self.first_guess
        return RESERVE_MARGIN * sum(self.estimate(t) for t in best)

    def estimate(self, trial: TrialInfo) -> float:
        if trial.arch_key not in self._seconds:
            self._seconds[trial.arch_key] = estimated_seconds(spec_from_dict(trial.arch), self.study.evaluator.data,
                                                              self.study.config.proxy)
        return self._seconds[trial.arch_key]


def no_scoring_note(elapsed: float, time_budget: float, held_back: float, minimum: int) -> str | None:
    """What a search says when its supernet's training leaves no time to score candidates before the time kept
    back for proxy-training the best of them; None when there is time."""
    if elapsed < time_budget - held_back:
        return None
    return (f"note: the supernet's training took {format_duration(elapsed)} of the {format_duration(time_budget)} "
            f"time budget, and the last {format_duration(held_back)} are kept for proxy-training the best "
            f"candidates, so only the first {minimum} candidates are scored (about a second each) and the best one "
            "proxy-trained past the budget; --resume with a longer --time-budget scores more on the stored supernet")


def near_chance_warning(accuracies: list[float], classes: int) -> str | None:
    """A warning when the supernet's scored paths are barely better than chance, so its ranking is close to
    random; None when there is nothing to warn about."""
    median = statistics.median(accuracies) if accuracies else None
    if median is None or median >= NEAR_CHANCE / classes:
        return None
    return (f"warning: the supernet's paths score near chance (median accuracy {median:.3f} "
            f"over {len(accuracies)} candidates, chance {1 / classes:.3f}), so it ranks them little better than "
            "their FLOPs do, and the proxy-trained best carry the result. --evaluator proxy ranks far better (on "
            "Fashion-MNIST close to a second proxy run, where 1-4 supernet epochs ranked at FLOPs' level: "
            "bench/supernet_fidelity.py) but weighs about 20 times fewer candidates in the same time. Pinning the "
            "block type and skip (e.g. --fix block=mbconv_e3 --fix skip=identity) lifts the paths' accuracy; more "
            "--supernet-epochs is untested beyond 4")


def proxy_train_best(study: Study) -> None:
    """Proxy-train the candidates with the best supernet rewards that are not yet; only these can win. First,
    a warning when the supernet scored its paths near chance."""
    scored = [t.supernet_accuracy for t in trials.list_trials(study.db, study.search_id)
              if t.supernet_accuracy is not None]
    warning = near_chance_warning(scored, study.space.num_classes)
    if warning is not None:
        study.events.note(warning)
    untrained = [t for t in trials.best_supernet_scored(study.db, study.search_id, study.config.proxy_trained)
                 if t.partial]
    last_seconds = 0.0
    for done, trial in enumerate(untrained):
        note = proxy_training_stop_note(done, len(untrained), last_seconds, study.elapsed(), study.config.time_budget)
        if note:
            study.events.note(note)
            return
        started = time.monotonic()
        study.proxy_train(trial)
        last_seconds = time.monotonic() - started


def proxy_training_stop_note(done: int, best: int, last_seconds: float, elapsed: float,
                             time_budget: float | None) -> str | None:
    """Why the proxy trainings of the best candidates stop after `done` of `best`: the next, as long as the last,
    would end past the time budget (bench/supernet_search.py's 9-minute run trained 3 that took 7 minutes, where
    2m15s were kept for them). None to go on; the first is always trained, so that there is a winner."""
    if done == 0 or time_budget is None or elapsed + last_seconds <= time_budget:
        return None
    return (f"note: proxy-trained {done} of the best {best} by supernet reward: the next would end past the "
            f"{format_duration(time_budget)} time budget (the last took {format_duration(last_seconds)}); --resume "
            "with a longer --time-budget trains the rest")
