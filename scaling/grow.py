"""`python -m scaling.grow --search ID [--rule width|compound|depth|resolution]`: grow a baseline into a B0..B7
family by a scaling rule (the paper's compound coefficients unless told otherwise: `scaling.compound.DEFAULT_RULE`
says why), store it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import effnas.cli as cli
from db import db_argument, open_database, resolve_url
from db.families import get_family, store_family
from effnas.cli import CommandParser, UsageError, add_db_option, command, fail
from effnas.records import Family, FamilyMember, GridPoint
from nas.evaluation.latency import RUNTIMES, LatencyError, LatencyProtocol, describe_environment
from nas.evaluation.latency_table import stored_reference_speed
from nas.search.config import SearchConfig
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from nas.training.config import DATASETS, DataError, ProxyConfig, TaskConfig, TrainingRecipe, default
from nas.training.data import native_resolution
from scaling.baseline import BASELINE_OPTIONS, add_baseline_options, resolve_baseline
from scaling.compound import (
    DEFAULT_RULE,
    DEFAULT_RULE_BASIS,
    DEFAULT_RULE_LABEL,
    GRID_STEP,
    GRID_TOLERANCE,
    RULES,
    SOURCES,
    flops_factor,
    grid_points,
)
from scaling.family import (
    GridScorer,
    ProxyEvaluator,
    ShortTrainingEvaluator,
    evaluate_members,
    family_json,
    grow_family,
    measure_members,
)

FORMATS = ("table", "json")
GRID_SCORERS = ("proxy", "training")
DEFAULT_EVALUATE_MAX_FLOPS = "1G"
# A member of 1G FLOPs takes about 2 s a run at batch 32 on one thread of this project's 2-core CPU.
DEFAULT_LATENCY_MAX_FLOPS = "1G"
# Limits of a grid search's budget: beyond them a CPU would train for days, so the command refuses up front.
MAX_GRID_POINTS = 100
MAX_GRID_EPOCHS = 50
MAX_GRID_SEEDS = 5
DEFAULT_GRID_EPOCHS = 3
DEFAULT_GRID_SUBSET = 10_000
DEFAULT_GRID_VAL_IMAGES = 2_000


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m scaling.grow",
        description=f"Grow a baseline into a B0..B7 family by a scaling rule. {FLOPS_CONVENTION}.",
    )
    add_baseline_options(parser.add_argument_group("baseline (one of)"))
    parser.add_argument("--rule", choices=RULES, default=None,
                        help=f"width, depth or resolution: that dimension alone, about 2^phi times B0's FLOPs at member "
                        f"phi; compound: depth, width and resolution together (default: {DEFAULT_RULE_LABEL}; "
                        "--coefficients implies compound; the command says what the default rests on)")
    parser.add_argument("--coefficients", choices=SOURCES, default=None,
                        help="compound rule: paper (1.2, 1.1, 1.15; the default with --rule compound), official "
                        "(published B1-B7 table) or grid (fitted to your data at phi = 1)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="B0's resolution, the base the members scale from (default: the baseline's own)")
    parser.add_argument("--max-resolution", metavar="PX|native", default=None,
                        help="no member's resolution above this (nor below B0's): native is the data's stored image "
                        "size (28 px for Fashion-MNIST), above which resolution scaling only upsamples; capped members "
                        "have fewer FLOPs than the rule's 2^phi (default: no cap)")
    parser.add_argument("--phi-max", type=int, default=7, help="largest phi, i.e. the last member (7)")
    parser.add_argument("--name", default=None, help="a name for the family")
    add_db_option(parser)
    parser.add_argument("--format", choices=FORMATS, default="table", help="print the family as a table or JSON (table)")
    _add_grid_options(parser)
    latency = parser.add_argument_group("latency of each member, measured here at batch 1 and 32")
    latency.add_argument("--latency-runtime", choices=(*RUNTIMES, "none"), default="eager",
                         help="eager: PyTorch, inference mode, channels-last; onnxruntime: ONNX Runtime; none: do not "
                         "measure (eager)")
    latency.add_argument("--latency-threads", type=int, default=1, help="intra-op threads (1)")
    latency.add_argument("--latency-max-flops", default=DEFAULT_LATENCY_MAX_FLOPS,
                         help=f"measure members up to this many FLOPs per image ({DEFAULT_LATENCY_MAX_FLOPS})")
    proxy = parser.add_argument_group("the data, and proxy training (grid coefficients and --evaluate)")
    proxy.add_argument("--evaluate", action="store_true", help="train members under --evaluate-max-flops on the proxy")
    proxy.add_argument("--evaluate-max-flops", default=DEFAULT_EVALUATE_MAX_FLOPS,
                       help=f"FLOPs cap for --evaluate ({DEFAULT_EVALUATE_MAX_FLOPS})")
    proxy.add_argument("--dataset", choices=DATASETS,
                       help=f"proxy data set (default: the search's, else {default(TaskConfig, 'dataset')})")
    proxy.add_argument("--data-dir", default=None, help="folder of the data set (cifar10, imagefolder)")
    proxy.add_argument("--subset", type=int, default=None, help="use only this many images")
    proxy.add_argument("--epochs", type=int, default=None,
                       help=f"proxy epochs (default: the search's, else {default(ProxyConfig, 'epochs')})")
    proxy.add_argument("--seed", type=int, default=None,
                       help=f"proxy training seed (default: the search's, else {default(ProxyConfig, 'seed')})")
    return parser


def _add_grid_options(parser: CommandParser) -> None:
    grid = parser.add_argument_group("grid coefficients (--coefficients grid)")
    grid.add_argument("--grid-scoring", choices=GRID_SCORERS, default="proxy",
                      help="score each grid point by the search's proxy (default) or by a short run of the "
                      "final-training recipe at the member's resolution (validation accuracy, never test)")
    grid.add_argument("--grid-epochs", type=int, default=DEFAULT_GRID_EPOCHS,
                      help=f"--grid-scoring training: epochs per run ({DEFAULT_GRID_EPOCHS})")
    grid.add_argument("--grid-subset", type=int, default=DEFAULT_GRID_SUBSET,
                      help=f"--grid-scoring training: training images per run ({DEFAULT_GRID_SUBSET:,})")
    grid.add_argument("--grid-val-images", type=int, default=DEFAULT_GRID_VAL_IMAGES,
                      help=f"--grid-scoring training: validation images ({DEFAULT_GRID_VAL_IMAGES:,})")
    grid.add_argument("--grid-seeds", default="0",
                      help="--grid-scoring training: seeds, e.g. 0,1 (each point's score is their mean; 0)")
    grid.add_argument("--grid-step", type=cli.finite_float, default=GRID_STEP,
                      help=f"grid spacing of alpha, beta, gamma ({GRID_STEP})")
    grid.add_argument("--grid-tolerance", type=cli.finite_float, default=GRID_TOLERANCE,
                      help=f"keep grid points with |alpha*beta^2*gamma^2 - 2| within this ({GRID_TOLERANCE})")


def _validate(args: argparse.Namespace) -> None:
    chosen = [flag for flag in BASELINE_OPTIONS if getattr(args, flag) is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one baseline: --search ID, --trial ID, --arch FILE.json or --baseline NAME")
    if args.phi_max < 1:
        raise UsageError(f"--phi-max must be at least 1, got {args.phi_max}")
    if args.resolution is not None and args.resolution < 32:
        raise UsageError(f"--resolution must be at least 32, got {args.resolution}")
    if args.phi_max > 7:
        raise UsageError(f"--phi-max goes up to 7 (B7), got {args.phi_max}")
    if args.rule not in (None, "compound") and args.coefficients is not None:
        raise UsageError(f"--coefficients is for the compound rule; --rule {args.rule} scales one dimension by fixed "
                         "coefficients")
    if args.coefficients == "grid":
        _validate_grid(args)
    if args.max_resolution is not None:
        _validate_max_resolution(args)
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.subset is not None and args.subset < 10:
        raise UsageError(f"--subset must be at least 10, got {args.subset}")
    cli.at_least("--latency-threads", args.latency_threads, 1)


def _validate_grid(args: argparse.Namespace) -> None:
    if args.grid_step <= 0 or args.grid_tolerance <= 0:
        raise UsageError("--grid-step and --grid-tolerance must be positive")
    points = len(grid_points(args.grid_step, args.grid_tolerance))
    if not 1 <= points <= MAX_GRID_POINTS:
        raise UsageError(f"--grid-step {args.grid_step:g} and --grid-tolerance {args.grid_tolerance:g} give {points} "
                         f"grid points; between 1 and {MAX_GRID_POINTS} are allowed")
    if not 1 <= args.grid_epochs <= MAX_GRID_EPOCHS:
        raise UsageError(f"--grid-epochs must be between 1 and {MAX_GRID_EPOCHS}, got {args.grid_epochs}")
    if args.grid_subset < 10 or args.grid_val_images < 10:
        raise UsageError("--grid-subset and --grid-val-images must be at least 10")
    args.grid_seeds = cli.parse_seeds(args.grid_seeds, "--grid-seeds")
    if len(args.grid_seeds) > MAX_GRID_SEEDS:
        raise UsageError(f"--grid-seeds takes at most {MAX_GRID_SEEDS} seeds, got {len(args.grid_seeds)}")


def _validate_max_resolution(args: argparse.Namespace) -> None:
    if args.rule == "resolution":
        raise UsageError("--max-resolution with --rule resolution would leave every member at B0's size")
    if args.coefficients == "grid":
        raise UsageError("--max-resolution and --coefficients grid do not go together: the grid fits gamma, the "
                         "resolution coefficient")
    if args.max_resolution != "native" and not (args.max_resolution.isdigit() and int(args.max_resolution) >= 32):
        raise UsageError(f"--max-resolution takes pixels (at least 32) or native, got {args.max_resolution!r}")


def resolution_cap(args: argparse.Namespace, search: SearchConfig | None) -> int | None:
    """The pixels --max-resolution names; `native` is the stored image size of the data set given, else the
    search's."""
    if args.max_resolution is None:
        return None
    if args.max_resolution != "native":
        return int(args.max_resolution)
    dataset = args.dataset or (search.task.dataset if search is not None else None)
    if dataset is None:
        raise UsageError("--max-resolution native needs the data set: give --dataset, or grow from a search")
    try:
        native = native_resolution(dataset, args.data_dir or (search.task.data_dir if search is not None else None))
    except DataError as exc:
        raise UsageError(str(exc)) from None
    if native is None:
        raise UsageError(f"{dataset} images have no one stored size; give --max-resolution in pixels")
    return native


def _grid_scorer(args: argparse.Namespace, search: SearchConfig | None) -> GridScorer:
    """The proxy, or short final trainings on the proxy's data set, all images of it (--grid-subset aside)."""
    if args.grid_scoring == "proxy":
        return _proxy(args, search)
    task, proxy = _proxy_configs(args, search)
    scorer = ShortTrainingEvaluator(replace(task, subset=None), TrainingRecipe(epochs=args.grid_epochs),
                                    args.grid_seeds, args.grid_subset, args.grid_val_images)
    scorer.data(proxy.resolution)  # unreadable data, or too few images, is a usage error before training
    return scorer


def _proxy_configs(args: argparse.Namespace, search: SearchConfig | None) -> tuple[TaskConfig, ProxyConfig]:
    """The search's task and proxy (else the defaults, on every core), with the options given on top."""
    task = search.task if search is not None else TaskConfig(threads=os.cpu_count() or 1)
    proxy = search.proxy if search is not None else ProxyConfig()
    if args.dataset is not None:
        task = replace(task, dataset=args.dataset, data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None)
    if args.subset is not None:
        task = replace(task, subset=args.subset)
    if args.epochs is not None:
        proxy = replace(proxy, epochs=args.epochs)
    if args.seed is not None:
        proxy = replace(proxy, seed=args.seed)
    return task, proxy


def _proxy(args: argparse.Namespace, search: SearchConfig | None) -> ProxyEvaluator:
    evaluator = ProxyEvaluator(*_proxy_configs(args, search))
    evaluator.data()  # unreadable data is a usage error before any training
    return evaluator


def upsampling_note(family: Family, dataset: str | None, data_dir: str | None) -> str | None:
    """One line when members train above the data's stored image size, where resolution scaling only upsamples."""
    if dataset is None:
        return None
    try:
        native = native_resolution(dataset, data_dir)
    except DataError:
        return None
    above = [m.name for m in family.members if native is not None and m.resolution > native]
    if not above:
        return None
    note = (f"Note: {', '.join(above)} train above the data's {native} px images; there resolution scaling "
            "upsamples: more compute per image, no new detail.")
    keep = max(native, family.base_resolution)
    if "max_resolution" not in family.config and any(m.resolution > keep for m in family.members):
        note += f" --max-resolution native keeps every member at {keep} px or below."
    return note


def describe_rule(family: Family) -> tuple[str, str]:
    """How a family's members were scaled, and how their resolutions were chosen."""
    fitted = (f"each resolution near {family.base_resolution} x gamma^phi chosen so that FLOPs follow the rule as "
              "closely as width and depth rounding allow")
    cap = family.config.get("max_resolution")
    if cap is not None:
        fitted += f", and at most {cap} px (--max-resolution), where FLOPs fall short of the rule"
    if family.rule != "compound":
        step = {"width": "width 2^(phi/2)", "depth": "depth 2^phi", "resolution": "resolution 2^(phi/2)"}
        return f"{family.rule} only ({step[family.rule]}; about 2^phi x B0's FLOPs)", fitted
    if family.coefficient_source == "official":
        return ("official per-model table (width, depth, resolution, dropout of B0-B7)",
                "resolutions as published at 224 px; at other bases chosen to keep each member's FLOPs ratio"
                + (f"; at most {cap} px (--max-resolution)" if cap is not None else ""))
    a, b, g = family.alpha, family.beta, family.gamma
    return (f"compound, {family.coefficient_source} coefficients: alpha {a:g}, beta {b:g}, gamma {g:g} "
            f"(alpha*beta^2*gamma^2 = {flops_factor(a, b, g):.3f}); depth alpha^phi, width beta^phi, resolution "
            f"gamma^phi x {family.base_resolution}", fitted)


def family_table(family: Family, db_arg: str) -> str:
    how, rounding = describe_rule(family)
    lines = [
        f"Family {family.id} from {family.baseline_ref}, scaled by {how}.",
        f"Channels by round_filters, repeats by round_repeats (official rules); {rounding}. {FLOPS_CONVENTION}, at "
        "each member's resolution.",
    ]
    if family.grid_points:
        lines += ["", *grid_table(family)]
    lines.append("")
    header = (f"{'name':6}{'phi':>4}{'width':>8}{'depth':>8}{'resolution':>12}{'params':>10}{'FLOPs':>10}"
              f"{'FLOPs/B0':>10}{'2^phi':>8}")
    has_acc = any(m.accuracy is not None for m in family.members)
    measured = next((m.latency for m in family.members if m.latency), None)
    if has_acc:
        header += f"{'proxy acc':>11}"
    if measured:
        header += f"{'ms, batch 1':>13}{'ms, batch 32':>14}"
    lines.append(header)
    for m in family.members:
        row = (f"{m.name:6}{m.phi:>4}{m.width:>8.3f}{m.depth:>8.3f}{m.resolution:>12}{format_params(m.params):>10}"
               f"{format_flops(m.flops):>10}{m.flops_ratio:>10.2f}{m.ideal_ratio:>8.0f}")
        if has_acc:
            row += f"{m.accuracy:>11.4f}" if m.accuracy is not None else f"{'-':>11}"
        if measured:
            row += (f"{m.latency['batch_1_ms']:>13.2f}{m.latency['batch_32_ms']:>14.1f}" if m.latency
                    else f"{'-':>13}{'-':>14}")
        lines.append(row)
    if measured:
        limit = format_flops(family.config.get("latency_max_flops", 0))
        lines.append(f"Latency: median of timed runs at each member's resolution, measured here on "
                     f"{describe_environment(measured['measured_on']).replace(', batch 1', '')}; members over "
                     f"{limit} FLOPs not measured (--latency-max-flops).")
    lines += ["", f"Family id: {family.id}",
              f"Train it: python -m scaling.train --family {family.id}{db_arg}",
              f"Export it: python -m scaling.export --family {family.id} --out family-{family.id}{db_arg}"]
    return "\n".join(lines)


def grid_table(family: Family) -> list[str]:
    """The grid search's points at phi = 1, the chosen one marked."""
    scoring = family.config.get("grid_scoring", {})
    if scoring.get("scored_by") == "final-training":
        how = (f"short final trainings ({scoring['epochs']} epochs on {scoring['subset']:,} images, seeds "
               f"{','.join(map(str, scoring['seeds']))}; mean validation accuracy)")
    else:
        how = "the proxy (validation accuracy)"
    lines = [f"Grid search at phi=1, {len(family.grid_points)} points scored by {how}; * = chosen:",
             f"  {'alpha':>6}{'beta':>6}{'gamma':>7}{'a*b^2*g^2':>11}{'resolution':>12}{'FLOPs':>10}{'val acc':>9}"]
    for p in family.grid_points:
        chosen = "*" if (p.alpha, p.beta, p.gamma) == (family.alpha, family.beta, family.gamma) else " "
        result = f"{p.accuracy:.4f}" if p.accuracy is not None else "failed"
        lines.append(f"{chosen} {p.alpha:>6g}{p.beta:>6g}{p.gamma:>7g}{p.flops_factor:>11.3f}{p.resolution:>12}"
                     f"{format_flops(p.flops):>10}{result:>9}")
    return lines


class GrowProgress:
    """What grow prints on stderr as it goes, whatever --format (stdout carries the result): each grid point with
    the time left, each member's proxy accuracy and latency."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def grid_point(self, point: GridPoint, index: int, total: int) -> None:
        result = f"validation accuracy {point.accuracy:.4f}" if point.accuracy is not None else f"failed: {point.error}"
        left = (time.monotonic() - self.started) / index * (total - index)
        print(f"grid point {index}/{total}: alpha {point.alpha:g}, beta {point.beta:g}, gamma {point.gamma:g} "
              f"({format_flops(point.flops)} FLOPs at {point.resolution} px) -> {result}; ~{cli.format_duration(left)} "
              "left", file=sys.stderr, flush=True)

    def member(self, member: FamilyMember) -> None:
        print(f"{member.name}: proxy accuracy {member.accuracy:.4f}", file=sys.stderr, flush=True)

    def latency(self, member: FamilyMember) -> None:
        print(f"{member.name}: {member.latency['batch_1_ms']:.2f} ms at batch 1, "
              f"{member.latency['batch_32_ms']:.1f} ms at batch 32 ({member.resolution} px)", file=sys.stderr,
              flush=True)


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    db_url = resolve_url(args.db)
    _validate(args)
    max_flops = cli.parse_flops(args.evaluate_max_flops)
    latency_protocol = LatencyProtocol(runtime="eager" if args.latency_runtime == "none" else args.latency_runtime,
                                       threads=args.latency_threads)
    try:
        latency_protocol.check()
    except LatencyError as exc:
        raise UsageError(str(exc)) from None
    baseline, search = resolve_baseline(args, db_url)
    if args.resolution is not None:
        baseline = replace(baseline, spec=replace(baseline.spec, resolution=args.resolution))
    cap = resolution_cap(args, search)
    if cap is not None and cap < baseline.spec.resolution and args.format != "json":
        print(f"--max-resolution {cap} is below B0's {baseline.spec.resolution} px: every member stays at "
              f"{baseline.spec.resolution} px.", file=sys.stderr, flush=True)
    evaluator = _proxy(args, search) if args.evaluate else None
    scorer = _grid_scorer(args, search) if args.coefficients == "grid" else None
    db = open_database(db_url)
    progress = GrowProgress()

    if args.rule is None and args.coefficients is None:
        print(f"Scaling by the default rule, {DEFAULT_RULE_LABEL}: {DEFAULT_RULE_BASIS}. --rule width, depth or "
              "resolution scales one dimension alone.", file=sys.stderr, flush=True)
    rule = args.rule or ("compound" if args.coefficients else DEFAULT_RULE)
    source = args.coefficients or "paper"
    name = args.name or (f"{baseline.ref} x {source}" if rule == "compound" else f"{baseline.ref} x {rule}")
    try:
        family = grow_family(baseline, rule, source, args.phi_max, name, scorer, args.grid_step,
                             args.grid_tolerance, progress.grid_point, cap)
        if args.evaluate:
            family = evaluate_members(family, evaluator, max_flops, progress.member)
        if args.latency_runtime != "none":
            family = measure_members(family, latency_protocol, cli.parse_flops(args.latency_max_flops),
                                     progress.latency, stored_reference_speed(latency_protocol, db))
    except ValueError as exc:
        fail(str(exc), prog=parser.prog)
    except KeyboardInterrupt:
        print("\nInterrupted; no family was stored.", file=sys.stderr)
        return 130
    family = get_family(db, store_family(db, family))
    if args.format == "json":
        print(json.dumps(family_json(family), indent=2))
        return 0
    print(family_table(family, db_argument(db_url)))
    task = search.task if search is not None else None
    note = upsampling_note(family, args.dataset or (task.dataset if task else None),
                           args.data_dir or (task.data_dir if task else None))
    if note:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
