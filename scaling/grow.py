"""`python -m scaling.grow --search ID`: grow a baseline into a B0..B7 family by compound scaling, store it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from effnas.cli import OneLineParser, UsageError, fail, parse_flops
from nas.evaluation.data import DATASETS, DataError
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from nas.runner import SearchSettings, best_trial, load_task_data
from nas.space.spec import SpecError, from_json, named_spec
from nas.evaluation.proxy import ProxyConfig
from scaling.compound import SOURCES, flops_factor
from db import FamilyRecord
from scaling.family import (
    Baseline,
    GridPoint,
    Member,
    ProxyEvaluator,
    evaluate_members,
    family_summary,
    grow_family,
    store_family,
)

DEFAULT_EVALUATE_MAX_FLOPS = "1G"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m scaling.grow",
        description=f"Grow a baseline into a B0..B7 family by compound scaling. {FLOPS_CONVENTION}.",
    )
    source = parser.add_argument_group("baseline (one of)")
    source.add_argument("--search", type=int, metavar="ID", help="the best trial of search ID")
    source.add_argument("--trial", type=int, metavar="ID", help="trial ID (its database id)")
    source.add_argument("--arch", metavar="FILE.json", help="an architecture spec file (effnas JSON format)")
    source.add_argument("--baseline", metavar="NAME", help="an official network by name, e.g. efficientnet-b0")
    parser.add_argument("--coefficients", default="paper",
                        help="paper (1.2, 1.1, 1.15; default), official (published B1-B7 table) or grid")
    parser.add_argument("--phi-max", type=int, default=7, help="largest phi, i.e. the last member (7)")
    parser.add_argument("--name", default=None, help="a name for the family")
    parser.add_argument("--db", default=None, help="database URL or SQLite path (default $EFFNAS_DB or effnas.db)")
    parser.add_argument("--json", action="store_true", help="print the family as JSON instead of a table")
    proxy = parser.add_argument_group("proxy training (grid coefficients and --evaluate)")
    proxy.add_argument("--evaluate", action="store_true", help="train members under --evaluate-max-flops on the proxy")
    proxy.add_argument("--evaluate-max-flops", default=DEFAULT_EVALUATE_MAX_FLOPS,
                       help=f"FLOPs cap for --evaluate ({DEFAULT_EVALUATE_MAX_FLOPS})")
    proxy.add_argument("--grid-step", type=float, default=0.1, help="grid spacing of alpha, beta, gamma (0.1)")
    proxy.add_argument("--grid-tolerance", type=float, default=0.1,
                       help="keep grid points with |alpha*beta^2*gamma^2 - 2| within this (0.1)")
    proxy.add_argument("--dataset", default=None, help="proxy data set (default: the search's, else mnist)")
    proxy.add_argument("--data-dir", default=None, help="folder of the data set (cifar10, imagefolder)")
    proxy.add_argument("--subset", type=int, default=None, help="use only this many images")
    proxy.add_argument("--epochs", type=int, default=None, help="proxy epochs (default: the search's, else 3)")
    proxy.add_argument("--seed", type=int, default=None, help="proxy training seed (default: the search's, else 0)")
    return parser


def _validate(args: argparse.Namespace) -> None:
    chosen = [flag for flag in ("search", "trial", "arch", "baseline") if getattr(args, flag) is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one baseline: --search ID, --trial ID, --arch FILE.json or --baseline NAME")
    if args.coefficients not in SOURCES:
        raise UsageError(f"unknown --coefficients {args.coefficients!r}; choose one of {', '.join(SOURCES)}")
    if args.phi_max < 1:
        raise UsageError(f"--phi-max must be at least 1, got {args.phi_max}")
    if args.coefficients == "official" and args.phi_max > 7:
        raise UsageError("the official table stops at B7: use --phi-max 7 or less")
    if args.grid_step <= 0 or args.grid_tolerance <= 0:
        raise UsageError("--grid-step and --grid-tolerance must be positive")
    if args.dataset is not None and args.dataset not in DATASETS:
        raise UsageError(f"unknown data set {args.dataset!r}; choose one of {', '.join(DATASETS)}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.subset is not None and args.subset < 10:
        raise UsageError(f"--subset must be at least 10, got {args.subset}")


def _open_existing(db_url: str):
    from db import open_database

    return open_database(db_url, create=False)


def resolve_baseline(args: argparse.Namespace, db_url: str) -> tuple[Baseline, SearchSettings | None]:
    """The baseline spec and, where it comes from a search, that search's settings (for the proxy)."""
    from db import SearchRecord, TrialRecord
    from nas.space.spec import spec_from_dict

    if args.baseline is not None:
        try:
            return Baseline(named_spec(args.baseline), "name", args.baseline), None
        except SpecError as exc:
            raise UsageError(str(exc)) from None
    if args.arch is not None:
        path = Path(args.arch)
        try:
            spec = from_json(path.read_text())
        except OSError as exc:
            raise UsageError(f"cannot read {args.arch}: {exc.strerror}") from None
        except SpecError as exc:
            raise UsageError(f"{args.arch}: {exc}") from None
        return Baseline(spec, "file", str(path.resolve())), None
    factory = _open_existing(db_url)
    with factory() as session:
        if args.search is not None:
            search = session.get(SearchRecord, args.search)
            if search is None:
                raise UsageError(f"no search with id {args.search}")
            trial = best_trial(session, args.search)
            if trial is None:
                raise UsageError(f"search {args.search} has no completed trial to scale")
        else:
            trial = session.get(TrialRecord, args.trial)
            if trial is None:
                raise UsageError(f"no trial with id {args.trial}")
            if trial.status != "complete":
                raise UsageError(f"trial {args.trial} is {trial.status}, not complete")
            search = trial.search
        settings = SearchSettings.from_config(search.config)
        ref = f"search {search.id}, trial {trial.number}"
        return Baseline(spec_from_dict(trial.arch), "trial", ref, trial.id), settings


def _proxy(args: argparse.Namespace, settings: SearchSettings | None) -> ProxyEvaluator:
    base = settings or SearchSettings(target_flops=1, threads=os.cpu_count() or 1)
    if args.dataset is not None:
        base = replace(base, dataset=args.dataset, data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None)
    if args.subset is not None:
        base = replace(base, subset=args.subset)
    if args.epochs is not None:
        base = replace(base, epochs=args.epochs)
    if args.seed is not None:
        base = replace(base, seed=args.seed)
    load_task_data(base)

    def load(size: int):
        return load_task_data(base, size)

    config: ProxyConfig = base.proxy_config()
    return ProxyEvaluator(load, base.proxy_resolution, config)


def family_table(summary: dict[str, Any], db_arg: str) -> str:
    coefficients = summary["coefficients"]
    if coefficients["source"] == "official":
        how = "official per-model table (width, depth, resolution, dropout of B0-B7)"
        rounding = "resolutions as published"
    else:
        a, b, g = coefficients["alpha"], coefficients["beta"], coefficients["gamma"]
        base = summary["members"][0]["resolution"]
        how = (f"{coefficients['source']}: alpha {a:g}, beta {b:g}, gamma {g:g} "
               f"(alpha*beta^2*gamma^2 = {flops_factor(a, b, g):.3f}); depth alpha^phi, width beta^phi, "
               f"resolution gamma^phi x {base}")
        rounding = "resolutions rounded to a multiple of 8"
    family_id = summary["family_id"]
    lines = [
        f"Family {family_id} from {summary['baseline']['ref']}, coefficients {how}.",
        f"Channels by round_filters, repeats by round_repeats (official rules); {rounding}. {FLOPS_CONVENTION}.",
    ]
    done = [p for p in summary["grid"] if p["status"] == "complete"]
    if done:
        lines.append(f"Grid search: {len(summary['grid'])} points at phi=1 ({len(done)} trained), best proxy accuracy "
                     f"{max(p['accuracy'] for p in done):.4f}.")
    lines.append("")
    header = (f"{'name':6}{'phi':>4}{'width':>8}{'depth':>8}{'resolution':>12}{'params':>10}{'FLOPs':>10}"
              f"{'FLOPs/B0':>10}{'2^phi':>8}")
    has_acc = any(m["accuracy"] is not None for m in summary["members"])
    if has_acc:
        header += f"{'proxy acc':>11}"
    lines.append(header)
    for m in summary["members"]:
        row = (f"{m['name']:6}{m['phi']:>4}{m['width']:>8.3f}{m['depth']:>8.3f}{m['resolution']:>12}"
               f"{format_params(m['params']):>10}{format_flops(m['flops']):>10}{m['flops_ratio']:>10.2f}"
               f"{m['ideal_ratio']:>8.0f}")
        if has_acc:
            row += f"{m['accuracy']:>11.4f}" if m["accuracy"] is not None else f"{'-':>11}"
        lines.append(row)
    lines += ["", f"Family id: {family_id}",
              f"Export it: python -m scaling.export --family {family_id} --out family-{family_id}{db_arg}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore")
    from db import DatabaseError, open_database, resolve_url

    db_url = resolve_url(args.db)
    try:
        _validate(args)
        max_flops = parse_flops(args.evaluate_max_flops)
        baseline, settings = resolve_baseline(args, db_url)
        needs_proxy = args.coefficients == "grid" or args.evaluate
        evaluator = _proxy(args, settings) if needs_proxy else None
        factory = open_database(db_url)
    except (UsageError, DataError, DatabaseError) as exc:
        fail(str(exc))

    quiet = args.json

    def grid_progress(point: GridPoint, index: int, total: int) -> None:
        if not quiet:
            result = f"accuracy {point.accuracy:.4f}" if point.accuracy is not None else f"failed: {point.error}"
            print(f"grid point {index}/{total}: alpha {point.alpha:g}, beta {point.beta:g}, gamma {point.gamma:g} "
                  f"({format_flops(point.flops)} FLOPs) -> {result}", file=sys.stderr, flush=True)

    def member_progress(member: Member) -> None:
        if not quiet:
            print(f"{member.plan.name}: proxy accuracy {member.accuracy:.4f}", file=sys.stderr, flush=True)

    try:
        family = grow_family(baseline, args.coefficients, args.phi_max, evaluator, args.grid_step,
                             args.grid_tolerance, grid_progress)
        if args.evaluate:
            family = evaluate_members(family, evaluator, max_flops, member_progress)
    except ValueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("\nInterrupted; no family was stored.", file=sys.stderr)
        return 130
    name = args.name or f"{baseline.ref} x {args.coefficients}"
    family_id = store_family(factory, family, name)
    with factory() as session:
        summary = family_summary(session.get(FamilyRecord, family_id))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        db_arg = f" --db {db_url}" if db_url != "sqlite:///effnas.db" else ""
        print(family_table(summary, db_arg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
