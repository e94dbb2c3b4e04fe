"""Growing a baseline into a family: members by a scaling rule, coefficients, grid points scored by the proxy or
by short final trainings, proxy accuracies; and the family as JSON, the one form `scaling.grow --format json`
prints and `family.json` holds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from db import Database
from db.training import list_runs
from effnas.records import Family, FamilyMember, GridPoint, PointStatus, TrainingRun, TrainingStatus
from nas.evaluation.latency import LatencyProtocol, measure_latency
from nas.evaluation.proxy import train_and_evaluate
from nas.space.builder import build_model
from nas.space.flops import FLOPS_CONVENTION, count_flops, count_params
from nas.space.spec import ArchSpec, spec_from_dict, spec_to_dict
from nas.training.config import ProxyConfig, TaskConfig, TrainingRecipe
from nas.training.data import TaskData, load_task_data
from scaling.baseline import Baseline
from scaling.compound import (
    GRID_STEP,
    GRID_TOLERANCE,
    PAPER_COEFFICIENTS,
    compound_members,
    flops_factor,
    grid_points,
    official_members,
    rule_coefficients,
    scaled_member_row,
    scaled_spec,
)


class GridScorer(Protocol):
    """Scores a grown network on held-out training data (validation accuracy, never test) and says how."""

    def __call__(self, spec: ArchSpec, resolution_mult: float) -> tuple[float, float]:
        """(validation accuracy, seconds spent)."""

    def describe(self) -> dict[str, Any]:
        """How points were scored, as the family's config records it."""


class ProxyEvaluator:
    """The search's proxy training at a scaled proxy resolution (data loaded once per resolution)."""

    def __init__(self, task: TaskConfig, config: ProxyConfig) -> None:
        self.task = task
        self.config = config
        self._cache: dict[int, TaskData] = {}

    def proxy_resolution(self, resolution_mult: float) -> int:
        return max(32, int(round(self.config.resolution * resolution_mult)))

    def data(self, resolution_mult: float = 1.0) -> TaskData:
        size = self.proxy_resolution(resolution_mult)
        if size not in self._cache:
            self._cache[size] = load_task_data(self.task, size)
        return self._cache[size]

    def __call__(self, spec: ArchSpec, resolution_mult: float) -> tuple[float, float]:
        result = train_and_evaluate(spec, self.data(resolution_mult), self.config)
        return result.accuracy, result.train_seconds + result.eval_seconds

    def describe(self) -> dict[str, Any]:
        return {"scored_by": "proxy", "proxy_epochs": self.config.epochs, "proxy_seed": self.config.seed,
                "subset": self.task.subset}


class ShortTrainingEvaluator:
    """A short run of the final-training recipe at the network's own resolution, once per seed: the mean of the
    best validation accuracies (validation images held out of the training files, as final training holds them)."""

    def __init__(self, task: TaskConfig, recipe: TrainingRecipe, seeds: tuple[int, ...], subset: int | None,
                 val_images: int) -> None:
        self.task = task
        self.recipe = recipe
        self.seeds = seeds
        self.subset = subset
        self.val_images = val_images
        self._cache: dict[int, TaskData] = {}

    def data(self, resolution: int) -> TaskData:
        if resolution not in self._cache:
            self._cache[resolution] = load_task_data(self.task, resolution, subset=self.subset,
                                                     val_images=self.val_images)
        return self._cache[resolution]

    def __call__(self, spec: ArchSpec, resolution_mult: float) -> tuple[float, float]:
        from nas.training.engine import Trainer

        started = time.monotonic()
        accuracies = []
        for seed in self.seeds:
            trainer = Trainer(spec, self.data(spec.resolution), replace(self.recipe, seed=seed))
            while trainer.epoch < self.recipe.epochs:
                trainer.fit_epoch()
            accuracies.append(trainer.best["accuracy"])
        return statistics.fmean(accuracies), time.monotonic() - started

    def describe(self) -> dict[str, Any]:
        return {"scored_by": "final-training", "epochs": self.recipe.epochs, "seeds": list(self.seeds),
                "subset": self.subset, "val_images": self.val_images, "recipe_key": self.recipe.key()}


def search_grid(
    baseline: ArchSpec,
    evaluate: GridScorer,
    step: float,
    tolerance: float,
    on_point: Callable[[GridPoint, int, int], None] | None = None,
) -> list[GridPoint]:
    """The paper's step 1: each (alpha, beta, gamma) scales the baseline at phi = 1 and is scored."""
    points = grid_points(step, tolerance)
    if not points:
        raise ValueError(f"no grid point within {tolerance} of alpha*beta^2*gamma^2 = 2 at step {step}")
    results = []
    for index, (alpha, beta, gamma) in enumerate(points):
        _, width, depth, _, resolution, dropout = scaled_member_row(baseline, alpha, beta, gamma, 1)
        spec = scaled_spec(baseline, width, depth, resolution, dropout)
        common = dict(alpha=alpha, beta=beta, gamma=gamma, flops_factor=flops_factor(alpha, beta, gamma),
                      flops=count_flops(spec), params=count_params(spec), resolution=resolution,
                      arch=spec_to_dict(spec))
        try:
            accuracy, _ = evaluate(spec, gamma)
            point = GridPoint(status=PointStatus.COMPLETE, accuracy=accuracy, **common)
        except Exception as exc:  # one failing grid point is recorded; the others still count
            point = GridPoint(status=PointStatus.FAILED, error=f"{type(exc).__name__}: {exc}", **common)
        results.append(point)
        if on_point is not None:
            on_point(point, index + 1, len(points))
    return results


def best_grid_point(points: list[GridPoint]) -> GridPoint:
    """Highest validation accuracy; on a tie, fewer FLOPs."""
    done = [p for p in points if p.status is PointStatus.COMPLETE]
    if not done:
        raise ValueError("every grid point failed")
    return max(done, key=lambda p: (p.accuracy, -p.flops))


def grow_family(
    baseline: Baseline,
    rule: str,
    source: str,
    phi_max: int,
    name: str,
    grid_scorer: GridScorer | None = None,
    grid_step: float = GRID_STEP,
    grid_tolerance: float = GRID_TOLERANCE,
    on_grid_point: Callable[[GridPoint, int, int], None] | None = None,
    max_resolution: int | None = None,
) -> Family:
    """The family B0..B{phi_max} by `rule`; compound scaling takes its coefficients from `source` (the grid search
    runs here). A single-dimension rule has fixed coefficients (source 'fixed'). No member's resolution exceeds
    `max_resolution` (or the base, if higher). Not yet stored."""
    grid: list[GridPoint] = []
    coefficients: tuple[float | None, float | None, float | None] = (None, None, None)
    config: dict[str, Any] = {"phi_max": phi_max}
    if max_resolution is not None:
        config["max_resolution"] = max(max_resolution, baseline.spec.resolution)
    if rule != "compound":
        source = "fixed"
        coefficients = rule_coefficients(rule, PAPER_COEFFICIENTS)
        members = compound_members(baseline.spec, *coefficients, phi_max, max_resolution)
    elif source == "official":
        members = official_members(baseline.spec, phi_max, max_resolution)
    else:
        if source == "grid":
            if max_resolution is not None:
                # The grid's points differ in gamma; with resolution capped they would be scored at other
                # resolutions than the ones they are chosen for.
                raise ValueError("a resolution cap and grid coefficients do not go together: the grid fits gamma")
            if grid_scorer is None:
                raise ValueError("grid coefficients need a way to score grid points")
            grid = search_grid(baseline.spec, grid_scorer, grid_step, grid_tolerance, on_grid_point)
            best = best_grid_point(grid)
            coefficients = (best.alpha, best.beta, best.gamma)
            config.update(grid_step=grid_step, grid_tolerance=grid_tolerance, grid_scoring=grid_scorer.describe())
        elif source == "paper":
            coefficients = PAPER_COEFFICIENTS
        else:
            raise ValueError(f"unknown coefficient source {source!r}")
        members = compound_members(baseline.spec, *coefficients, phi_max, max_resolution)
    alpha, beta, gamma = coefficients
    return Family(name=name, baseline_kind=baseline.kind, baseline_ref=baseline.ref,
                  baseline_trial_id=baseline.trial_id, baseline_arch=spec_to_dict(baseline.spec), rule=rule,
                  coefficient_source=source, alpha=alpha, beta=beta, gamma=gamma,
                  base_resolution=baseline.spec.resolution, config=config, members=members, grid_points=grid)


def evaluate_members(family: Family, evaluate: ProxyEvaluator, max_flops: float,
                     on_member: Callable[[FamilyMember], None] | None = None) -> Family:
    """Proxy accuracy for the members at or under `max_flops` (so that a CPU never tries to train B7)."""
    members = []
    for member in family.members:
        if member.flops <= max_flops:
            accuracy, seconds = evaluate(spec_from_dict(member.arch), member.resolution_mult)
            member = replace(member, accuracy=accuracy, train_seconds=seconds)
            if on_member is not None:
                on_member(member)
        members.append(member)
    return replace(family, members=members, config={**family.config, "evaluate_max_flops": max_flops})


# The two batches every member is measured at: one image (interactive use) and a batch of 32 (throughput).
LATENCY_BATCHES = (1, 32)


def measure_members(family: Family, protocol: LatencyProtocol, max_flops: float,
                    on_member: Callable[[FamilyMember], None] | None = None,
                    reference_ms: float | None = None) -> Family:
    """The measured latency, at its resolution and at batch 1 and 32, under `protocol` (its batch ignored), of each
    member at or under `max_flops` (a B7 at 600 px takes minutes a run at batch 32 on a CPU), scaled to
    `reference_ms` (`nas.evaluation.latency_table.stored_reference_speed`) when given."""
    members = []
    for member in family.members:
        if member.flops > max_flops:
            members.append(member)
            continue
        spec = spec_from_dict(member.arch)
        model = build_model(spec)
        shape = (1, spec.in_channels, member.resolution, member.resolution)
        figures = {f"batch_{batch}_ms": measure_latency(model, shape, replace(protocol, batch=batch),
                                                        reference_ms).median_ms
                   for batch in LATENCY_BATCHES}
        member = replace(member, latency={**figures, "measured_on": replace(protocol, batch=1).environment()})
        if on_member is not None:
            on_member(member)
        members.append(member)
    return replace(family, members=members, config={**family.config, "latency_max_flops": max_flops})


def trained_runs(db: Database, family_id: int) -> dict[str, TrainingRun]:
    """Member name -> the complete training run it is exported with: of its runs (seeds, recipes), the one with
    the highest validation accuracy (never test), the latest on a tie."""
    chosen: dict[str, TrainingRun] = {}
    for run in list_runs(db, family_id=family_id):
        if run.status is TrainingStatus.COMPLETE:
            best = chosen.get(run.member)
            if best is None or run.val_accuracy >= best.val_accuracy:
                chosen[run.member] = run
    return chosen


def family_json(family: Family, runs: dict[str, TrainingRun] | None = None) -> dict[str, Any]:
    """A stored family as JSON; with `runs` (member name -> training run), each trained member's run."""
    runs = runs or {}
    return {
        "family_id": family.id,
        "name": family.name,
        "created_at": family.created_at.isoformat() if family.created_at else None,
        "baseline": {"kind": family.baseline_kind, "ref": family.baseline_ref, "trial_id": family.baseline_trial_id,
                     "arch": family.baseline_arch},
        "rule": family.rule,
        "coefficients": {"source": family.coefficient_source, "alpha": family.alpha, "beta": family.beta,
                         "gamma": family.gamma},
        "config": family.config,
        "flops_convention": FLOPS_CONVENTION,
        "members": [
            {
                "name": m.name, "phi": m.phi, "width": m.width, "depth": m.depth, "resolution_mult": m.resolution_mult,
                "resolution": m.resolution, "dropout": m.dropout, "params": m.params, "flops": m.flops,
                "flops_ratio": m.flops_ratio, "ideal_ratio": m.ideal_ratio, "block_strings": m.block_strings.split(),
                "proxy_accuracy": m.accuracy, "latency": m.latency,
                "test_accuracy": runs[m.name].test_accuracy if m.name in runs else None,
                "training_run": runs[m.name].to_json() if m.name in runs else None,
            }
            for m in family.members
        ],
        "grid": [
            {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma, "flops_factor": p.flops_factor,
             "status": p.status.value, "val_accuracy": p.accuracy, "flops": p.flops, "params": p.params,
             "resolution": p.resolution}
            for p in family.grid_points
        ],
    }
