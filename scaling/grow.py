"""`python -m scaling.grow --search ID`: grow a baseline into a B0..B7 family by compound scaling, store it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from db import DatabaseError, db_argument, open_database, resolve_url
from db.families import Family, FamilyMember, GridPoint, get_family, store_family
from effnas.cli import CommandParser, UsageError, add_db_option, fail, finite_float, parse_flops
from nas.search.config import SearchConfig
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from nas.training.config import DATASETS, DataError, ProxyConfig, TaskConfig, default
from scaling.baseline import BASELINE_OPTIONS, resolve_baseline
from scaling.compound import GRID_STEP, GRID_TOLERANCE, SOURCES, flops_factor
from scaling.family import ProxyEvaluator, evaluate_members, family_json, grow_family

FORMATS = ("table", "json")

DEFAULT_EVALUATE_MAX_FLOPS = "1G"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m scaling.grow",
        description=f"Grow a baseline into a B0..B7 family by compound scaling. {FLOPS_CONVENTION}.",
    )
    source = parser.add_argument_group("baseline (one of)")
    source.add_argument("--search", type=int, metavar="ID", help="the best trial of search ID")
    source.add_argument("--trial", type=int, metavar="ID", help="trial ID (its database id)")
    source.add_argument("--arch", metavar="FILE.json", help="an architecture spec file (effnas JSON format)")
    source.add_argument("--baseline", metavar="NAME", help="an official network by name, e.g. efficientnet-b0")
    parser.add_argument("--coefficients", choices=SOURCES, default="paper",
                        help="paper (1.2, 1.1, 1.15; default), official (published B1-B7 table) or grid")
    parser.add_argument("--phi-max", type=int, default=7, help="largest phi, i.e. the last member (7)")
    parser.add_argument("--name", default=None, help="a name for the family")
    add_db_option(parser)
    parser.add_argument("--format", choices=FORMATS, default="table", help="print the family as a table or JSON (table)")
    proxy = parser.add_argument_group("proxy training (grid coefficients and --evaluate)")
    proxy.add_argument("--evaluate", action="store_true", help="train members under --evaluate-max-flops on the proxy")
    proxy.add_argument("--evaluate-max-flops", default=DEFAULT_EVALUATE_MAX_FLOPS,
                       help=f"FLOPs cap for --evaluate ({DEFAULT_EVALUATE_MAX_FLOPS})")
    proxy.add_argument("--grid-step", type=finite_float, default=GRID_STEP,
                       help=f"grid spacing of alpha, beta, gamma ({GRID_STEP})")
    proxy.add_argument("--grid-tolerance", type=finite_float, default=GRID_TOLERANCE,
                       help=f"keep grid points with |alpha*beta^2*gamma^2 - 2| within this ({GRID_TOLERANCE})")
    proxy.add_argument("--dataset", choices=DATASETS,
                       help=f"proxy data set (default: the search's, else {default(TaskConfig, 'dataset')})")
    proxy.add_argument("--data-dir", default=None, help="folder of the data set (cifar10, imagefolder)")
    proxy.add_argument("--subset", type=int, default=None, help="use only this many images")
    proxy.add_argument("--epochs", type=int, default=None,
                       help=f"proxy epochs (default: the search's, else {default(ProxyConfig, 'epochs')})")
    proxy.add_argument("--seed", type=int, default=None,
                       help=f"proxy training seed (default: the search's, else {default(ProxyConfig, 'seed')})")
    return parser


def _validate(args: argparse.Namespace) -> None:
    chosen = [flag for flag in BASELINE_OPTIONS if getattr(args, flag) is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one baseline: --search ID, --trial ID, --arch FILE.json or --baseline NAME")
    if args.phi_max < 1:
        raise UsageError(f"--phi-max must be at least 1, got {args.phi_max}")
    if args.coefficients == "official" and args.phi_max > 7:
        raise UsageError("the official table stops at B7: use --phi-max 7 or less")
    if args.grid_step <= 0 or args.grid_tolerance <= 0:
        raise UsageError("--grid-step and --grid-tolerance must be positive")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.subset is not None and args.subset < 10:
        raise UsageError(f"--subset must be at least 10, got {args.subset}")


def _proxy(args: argparse.Namespace, search: SearchConfig | None) -> ProxyEvaluator:
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
    evaluator = ProxyEvaluator(task, proxy)
    evaluator.data()  # unreadable data is a usage error before any training
    return evaluator


def family_table(family: Family, db_arg: str) -> str:
    if family.coefficient_source == "official":
        how = "official per-model table (width, depth, resolution, dropout of B0-B7)"
        rounding = "resolutions as published"
    else:
        a, b, g = family.alpha, family.beta, family.gamma
        how = (f"{family.coefficient_source}: alpha {a:g}, beta {b:g}, gamma {g:g} "
               f"(alpha*beta^2*gamma^2 = {flops_factor(a, b, g):.3f}); depth alpha^phi, width beta^phi, "
               f"resolution gamma^phi x {family.base_resolution}")
        rounding = "resolutions rounded to a multiple of 8"
    lines = [
        f"Family {family.id} from {family.baseline_ref}, coefficients {how}.",
        f"Channels by round_filters, repeats by round_repeats (official rules); {rounding}. {FLOPS_CONVENTION}.",
    ]
    done = [p for p in family.grid_points if p.accuracy is not None]
    if done:
        lines.append(f"Grid search: {len(family.grid_points)} points at phi=1 ({len(done)} trained), best proxy "
                     f"accuracy {max(p.accuracy for p in done):.4f}.")
    lines.append("")
    header = (f"{'name':6}{'phi':>4}{'width':>8}{'depth':>8}{'resolution':>12}{'params':>10}{'FLOPs':>10}"
              f"{'FLOPs/B0':>10}{'2^phi':>8}")
    has_acc = any(m.accuracy is not None for m in family.members)
    if has_acc:
        header += f"{'proxy acc':>11}"
    lines.append(header)
    for m in family.members:
        row = (f"{m.name:6}{m.phi:>4}{m.width:>8.3f}{m.depth:>8.3f}{m.resolution:>12}{format_params(m.params):>10}"
               f"{format_flops(m.flops):>10}{m.flops_ratio:>10.2f}{m.ideal_ratio:>8.0f}")
        if has_acc:
            row += f"{m.accuracy:>11.4f}" if m.accuracy is not None else f"{'-':>11}"
        lines.append(row)
    lines += ["", f"Family id: {family.id}",
              f"Export it: python -m scaling.export --family {family.id} --out family-{family.id}{db_arg}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    db_url = resolve_url(args.db)
    try:
        _validate(args)
        max_flops = parse_flops(args.evaluate_max_flops)
        baseline, search = resolve_baseline(args, db_url)
        needs_proxy = args.coefficients == "grid" or args.evaluate
        evaluator = _proxy(args, search) if needs_proxy else None
        db = open_database(db_url)
    except (UsageError, DataError, DatabaseError) as exc:
        fail(str(exc), prog=parser.prog)

    quiet = args.format == "json"

    def grid_progress(point: GridPoint, index: int, total: int) -> None:
        if not quiet:
            result = f"proxy accuracy {point.accuracy:.4f}" if point.accuracy is not None else f"failed: {point.error}"
            print(f"grid point {index}/{total}: alpha {point.alpha:g}, beta {point.beta:g}, gamma {point.gamma:g} "
                  f"({format_flops(point.flops)} FLOPs) -> {result}", file=sys.stderr, flush=True)

    def member_progress(member: FamilyMember) -> None:
        if not quiet:
            print(f"{member.name}: proxy accuracy {member.accuracy:.4f}", file=sys.stderr, flush=True)

    name = args.name or f"{baseline.ref} x {args.coefficients}"
    try:
        family = grow_family(baseline, args.coefficients, args.phi_max, name, evaluator, args.grid_step,
                             args.grid_tolerance, grid_progress)
        if args.evaluate:
            family = evaluate_members(family, evaluator, max_flops, member_progress)
    except ValueError as exc:
        fail(str(exc), prog=parser.prog)
    except KeyboardInterrupt:
        print("\nInterrupted; no family was stored.", file=sys.stderr)
        return 130
    family = get_family(db, store_family(db, family))
    if args.format == "json":
        print(json.dumps(family_json(family), indent=2))
    else:
        print(family_table(family, db_argument(db_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
