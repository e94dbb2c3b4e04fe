"""What an exported member promises, gathered from the database: the input it takes, the classes it gives, its
architecture and cost, its test accuracy over seeds, its recipe, and the search, family and rule it came from.
The same contract goes into every file of the member, the manifest and the model card."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from db import Database
from db.searches import get_search
from db.trials import get_trial
from effnas.records import Family, FamilyMember, TrainingRun
from nas.space.flops import FLOPS_CONVENTION
from nas.space.spec import ArchSpec
from nas.training.weights import TrainedWeights
from scaling.compare import MemberResult, compare_families, describe_coefficients, group_of

CONTRACT_FORMAT = "effnas-member-contract/1"


def effnas_version() -> str:
    try:
        return version("effnas")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@dataclass(frozen=True)
class MemberToExport:
    """One member as exported: its network, and where it was trained, its weights, run and seeds."""

    member: FamilyMember
    spec: ArchSpec
    weights: TrainedWeights | None = None
    run: TrainingRun | None = None
    seeds: MemberResult | None = None

    @property
    def trained(self) -> bool:
        return self.weights is not None


def seed_results(db: Database, family_id: int, runs: dict[str, TrainingRun]) -> dict[str, MemberResult]:
    """Member name -> its test accuracy over the seeds trained with the exported run's data and recipe."""
    comparisons = {comparison.key: comparison for comparison in compare_families(db, [family_id])}
    results = {}
    for name, run in runs.items():
        rows = comparisons[group_of(run)[0]].rows
        results[name] = next(row for row in rows if row.member == name)
    return results


def origin(db: Database, family: Family) -> dict[str, Any]:
    """The search (where the baseline is a trial), the family and the rule that made the members."""
    search = None
    if family.baseline_trial_id is not None:
        trial = get_trial(db, family.baseline_trial_id)
        info = get_search(db, trial.search_id) if trial is not None else None
        if info is not None:
            search = {"id": info.id, "name": info.name, "strategy": info.strategy, "dataset": info.dataset,
                      "target_flops": info.target_flops, "resolution": info.resolution, "seed": info.seed,
                      "trial_id": trial.id, "trial_number": trial.number}
    return {
        "search": search,
        "baseline": {"kind": family.baseline_kind, "ref": family.baseline_ref},
        "family": {"id": family.id, "name": family.name, "rule": family.rule,
                   "coefficients": {"source": family.coefficient_source, "alpha": family.alpha, "beta": family.beta,
                                    "gamma": family.gamma, "described": describe_coefficients(family)}},
    }


def _input(spec: ArchSpec, weights: TrainedWeights | None) -> dict[str, Any]:
    described = {"name": "image", "layout": "NCHW", "shape": ["N", spec.in_channels, spec.resolution, spec.resolution],
                 "channels": spec.in_channels, "color": "grayscale" if spec.in_channels == 1 else "RGB",
                 "resolution": spec.resolution, "dtype": "float32"}
    if weights is None:
        return {**described, "pixels": "normalised pixels (random weights: the member is untrained)",
                "normalisation": None}
    return {**described, "pixels": "float in [0, 1], resized to the resolution",
            "normalisation": {"mean": list(weights.mean), "std": list(weights.std), "inside_graph": True}}


def _accuracy(export: MemberToExport) -> dict[str, Any] | None:
    if export.run is None or export.seeds is None:
        return None
    seeds, run = export.seeds, export.run
    return {"test": {"mean": seeds.mean, "sd": seeds.sd, "seeds": list(seeds.seeds), "run_ids": list(seeds.run_ids),
                     "per_seed": list(seeds.test_accuracies), "sd_kind": "sample (n - 1)"},
            "exported_run": {"run_id": run.id, "seed": run.recipe.get("seed"), "test_accuracy": run.test_accuracy,
                             "val_accuracy": run.val_accuracy, "weights": run.chosen_weights,
                             "best_epoch": run.best_epoch, "chosen_by": "highest validation accuracy"}}


def member_contract(export: MemberToExport, made_by: dict[str, Any]) -> dict[str, Any]:
    """The contract of one member; `made_by` is the family's `origin`."""
    spec, member, run = export.spec, export.member, export.run
    return {
        "format": CONTRACT_FORMAT,
        "member": member.name,
        "phi": member.phi,
        "trained": export.trained,
        "input": _input(spec, export.weights),
        "output": {"name": "logits", "shape": ["N", spec.num_classes],
                   "meaning": "class scores before softmax, in the order of classes"},
        "classes": list(export.weights.classes) if export.weights is not None else None,
        "architecture": {"block_strings": spec.block_strings(), "flops": member.flops, "params": member.params,
                         "flops_convention": f"{FLOPS_CONVENTION}, at {spec.resolution}x{spec.resolution}",
                         "width": member.width, "depth": member.depth, "resolution": member.resolution},
        "accuracy": _accuracy(export),
        # Measured by scaling.grow at batch 1 and 32 on the machine `measured_on` names; None if never measured.
        "latency": member.latency,
        "recipe": {k: v for k, v in run.recipe.items() if k != "seed"} if run is not None else None,
        "data": ({"dataset": run.dataset, "subset": run.data.get("subset"), "val_images": run.data.get("val_images"),
                  "train_images": run.data.get("train_images"), "budget": run.budget}
                 if run is not None else None),
        **made_by,
        "effnas_version": effnas_version(),
    }
