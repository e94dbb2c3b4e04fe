"""`python -m scaling.compare`: trained families side by side, the paper's Figure 1 for the user's data.

Families are compared only where their runs saw the same data (data set, folder, training and validation images)
and the same recipe apart from the seed: one comparison per such group. For each member it gives the test
accuracy as mean +- sd over seeds (sample standard deviation, n - 1), FLOPs at the member's resolution and params,
and marks the Pareto front (fewer FLOPs, higher mean accuracy) across every family of the group. The dashboard's
family page draws the same comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from typing import Any

from db import Database, open_database, resolve_url
from db.families import get_family
from db.training import list_runs
from effnas.cli import CommandParser, UsageError, add_db_option, command
from effnas.records import Family, TrainingRun, TrainingStatus, budget_label
from nas.evaluation.pareto import pareto_front
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params

FORMATS = ("table", "json")
# Fields of a run's data configuration that decide which images it saw; resolution and threads do not.
DATA_FIELDS = ("dataset", "data_dir", "test_dir", "subset", "val_images")


def seed_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class MemberResult:
    """One trained member of one family: its cost and its test accuracy over seeds."""

    family_id: int
    family: str
    rule: str
    coefficients: str
    member: str
    phi: int
    resolution: int
    flops: int
    params: int
    seeds: tuple[int, ...]
    test_accuracies: tuple[float, ...]
    run_ids: tuple[int, ...]
    on_front: bool = False
    # Measured by scaling.grow at the member's resolution (ms), where it was; None otherwise.
    latency_ms: float | None = None
    latency_32_ms: float | None = None

    @property
    def mean(self) -> float:
        return seed_spread(list(self.test_accuracies))[0]

    @property
    def sd(self) -> float | None:
        return seed_spread(list(self.test_accuracies))[1]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean, "sd": self.sd}


@dataclass(frozen=True)
class Comparison:
    """The families trained on the same data with the same recipe (seed aside)."""

    key: str
    data: dict[str, Any]
    recipe: dict[str, Any]
    rows: list[MemberResult]

    @property
    def budget(self) -> str:
        """What training each figure had: training images x epochs."""
        return budget_label(self.data, self.recipe)

    def describe(self) -> str:
        return (f"{self.data['dataset']}, {self.budget} ({self.data['val_images']:,} validation images held out), "
                f"batch {self.recipe['batch_size']}, lr {self.recipe['lr']:g} (recipe {self.key})")

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "budget": self.budget, "data": self.data, "recipe": self.recipe,
                "members": [row.to_json() for row in self.rows]}


def group_of(run: TrainingRun) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(key, data, recipe without the seed): runs with one key differ only in seed, network and resolution."""
    data = {name: run.data.get(name) for name in DATA_FIELDS}
    recipe = {name: value for name, value in run.recipe.items() if name != "seed"}
    digest = hashlib.sha256(json.dumps([data, recipe], sort_keys=True).encode()).hexdigest()[:10]
    return digest, data, recipe


def describe_coefficients(family: Family) -> str:
    if family.coefficient_source == "official":
        return "official table"
    return f"{family.coefficient_source} ({family.alpha:.3g}, {family.beta:.3g}, {family.gamma:.3g})"


COSTS = ("flops", "latency")


def compare_families(db: Database, family_ids: list[int] | None = None,
                     dataset: str | None = None, cost: str = "flops") -> list[Comparison]:
    """Every group of complete family runs (largest first), each member's seeds aggregated, the front marked: over
    FLOPs, or over the measured latency at batch 1 (members never measured are then off it)."""
    runs = [run for run in list_runs(db, dataset=dataset)
            if run.status is TrainingStatus.COMPLETE and run.family_id is not None
            and (family_ids is None or run.family_id in family_ids)]
    families = {family_id: get_family(db, family_id) for family_id in {run.family_id for run in runs}}
    groups: dict[str, tuple[dict[str, Any], dict[str, Any], dict[tuple[int, str], dict[int, TrainingRun]]]] = {}
    for run in runs:
        key, data, recipe = group_of(run)
        group = groups.setdefault(key, (data, recipe, defaultdict(dict)))
        if run.data.get("train_images"):
            group[0]["train_images"] = run.data["train_images"]
        members = group[2]
        # A seed trained twice (an older effnas stored reruns) counts once: its latest run.
        members[(run.family_id, run.member)][run.recipe["seed"]] = run
    comparisons = [_comparison(key, data, recipe, members, families, cost)
                   for key, (data, recipe, members) in groups.items()]
    return sorted(comparisons, key=lambda c: (-len(c.rows), c.key))


def _comparison(key: str, data: dict[str, Any], recipe: dict[str, Any],
                members: dict[tuple[int, str], dict[int, TrainingRun]], families: dict[int, Family],
                cost: str = "flops") -> Comparison:
    rows = []
    for (family_id, name), by_seed in members.items():
        family = families[family_id]
        member = next(m for m in family.members if m.name == name)
        seeds = tuple(sorted(by_seed))
        first = by_seed[seeds[0]]
        rows.append(MemberResult(
            family_id=family_id, family=family.name, rule=family.rule, coefficients=describe_coefficients(family),
            member=name, phi=member.phi, resolution=first.resolution, flops=first.flops, params=first.params,
            seeds=seeds, test_accuracies=tuple(by_seed[s].test_accuracy for s in seeds),
            run_ids=tuple(by_seed[s].id for s in seeds),
            latency_ms=member.latency["batch_1_ms"] if member.latency else None,
            latency_32_ms=member.latency["batch_32_ms"] if member.latency else None,
        ))
    rows.sort(key=lambda r: (r.family_id, r.phi))
    if cost == "latency":
        measured = [i for i, r in enumerate(rows) if r.latency_ms is not None]
        front = {measured[i] for i in pareto_front([rows[i].latency_ms for i in measured],
                                                   [rows[i].mean for i in measured])}
    else:
        front = set(pareto_front([r.flops for r in rows], [r.mean for r in rows]))
    rows = [replace(r, on_front=i in front) for i, r in enumerate(rows)]
    return Comparison(key, data, recipe, rows)


def comparison_table(comparison: Comparison, cost: str = "flops") -> str:
    front = "FLOPs" if cost == "flops" else "latency at batch 1"
    lines = [comparison.describe(),
             f"Test accuracy: mean +- sd over seeds. {FLOPS_CONVENTION}, at each member's resolution. Latency: "
             "measured by scaling.grow at batch 1 and 32 (ms; its family's JSON says on what). "
             f"* = on the Pareto front ({front}, mean accuracy).",
             f"  {'family':>6}  {'name':30}{'rule':12}{'coefficients':24}{'member':>7}{'res':>5}{'FLOPs':>9}"
             f"{'params':>9}{'ms b1':>8}{'ms b32':>9}{'seeds':>7}  {'test accuracy':>16}"]
    for r in comparison.rows:
        spread = f"{r.mean:.4f} +- {r.sd:.4f}" if r.sd is not None else f"{r.mean:.4f} (1 seed)"
        latency = (f"{r.latency_ms:>8.2f}{r.latency_32_ms:>9.1f}" if r.latency_ms is not None
                   else f"{'-':>8}{'-':>9}")
        lines.append(f"{'*' if r.on_front else ' '} {r.family_id:>6}  {r.family[:29]:30}{r.rule:12}"
                     f"{r.coefficients[:23]:24}{r.member:>7}{r.resolution:>5}{format_flops(r.flops):>9}"
                     f"{format_params(r.params):>9}{latency}{len(r.seeds):>7}  {spread:>16}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="python -m scaling.compare",
                           description="Trained families side by side: test accuracy over seeds against FLOPs. "
                           f"{FLOPS_CONVENTION}.")
    parser.add_argument("--families", metavar="ID,ID", help="only these families (default: every trained family)")
    parser.add_argument("--dataset", help="only runs on this data set")
    parser.add_argument("--cost", choices=COSTS, default="flops",
                        help="the front's cost: FLOPs, or the latency scaling.grow measured at batch 1 (flops)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="table (default) or JSON")
    add_db_option(parser)
    return parser


def _family_ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise UsageError(f"cannot read --families {text!r}; write family ids separated by commas, e.g. 1,2")
    return [int(part) for part in parts]


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    family_ids = _family_ids(args.families)
    db = open_database(resolve_url(args.db), create=False)
    missing = [i for i in family_ids or [] if get_family(db, i) is None]
    if missing:
        raise UsageError(f"no family with id {', '.join(map(str, missing))}")
    comparisons = compare_families(db, family_ids, args.dataset, args.cost)
    if args.format == "json":
        print(json.dumps([c.to_json() for c in comparisons], indent=2))
    elif not comparisons:
        print("No trained family members yet: train them with python -m scaling.train --family ID")
    else:
        if len(comparisons) > 1:
            print(f"{len(comparisons)} comparisons, one per training budget and recipe "
                  f"({'; '.join(c.budget for c in comparisons)}): accuracies from different ones are not comparable "
                  "and are never ranked together.\n")
        print("\n\n".join(comparison_table(c, args.cost) for c in comparisons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
