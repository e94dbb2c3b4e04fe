"""The network a family is grown from, or a single network is trained: the best trial of a search, one trial, a
spec file, or an official network by name."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from db import Database, open_database, searches, trials
from effnas.cli import UsageError
from effnas.records import SearchInfo, TrialInfo, TrialStatus
from nas.search.config import SearchConfig
from nas.space.flops import format_flops
from nas.space.spec import ArchSpec, SpecError, from_json, named_spec, spec_from_dict

# The options that name a baseline; a command takes exactly one of them.
BASELINE_OPTIONS = ("search", "trial", "arch", "baseline")
# Which trial of a search: the reward winner, or the most accurate trained candidate within the target (the soft
# reward is nearly flat in FLOPs, so the winner can sit far from the budget on either side).
PICKS = ("reward", "accuracy")
PICK_LABELS = {"reward": "the reward winner",
               "accuracy": "the most accurate proxy-trained candidate within the target"}


def add_baseline_options(group: argparse._ActionsContainer) -> None:
    """--search, --trial, --arch, --baseline (one of them names the network) and --pick."""
    group.add_argument("--search", type=int, metavar="ID",
                       help="a trial of search ID: its reward winner, or what --pick names")
    group.add_argument("--trial", type=int, metavar="ID", help="trial ID (its database id)")
    group.add_argument("--arch", metavar="FILE.json", help="an architecture spec file (effnas JSON format)")
    group.add_argument("--baseline", metavar="NAME", help="an official network by name, e.g. efficientnet-b0")
    group.add_argument("--pick", choices=PICKS, default="reward",
                       help="with --search: reward, its reward winner (default); accuracy, its most accurate "
                       "proxy-trained candidate within the FLOPs target")


@dataclass(frozen=True)
class Baseline:
    spec: ArchSpec
    kind: str  # 'trial', 'file' or 'name'
    ref: str
    trial_id: int | None = None


def resolve_baseline(args: argparse.Namespace, db_url: str) -> tuple[Baseline, SearchConfig | None]:
    """The baseline spec and, where it comes from a search, that search's configuration (for the proxy)."""
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
    db = open_database(db_url, create=False)
    if args.search is not None:
        search = searches.get_search(db, args.search)
        if search is None:
            raise UsageError(f"no search with id {args.search}")
        trial = _picked_trial(db, search, getattr(args, "pick", "reward"))
    else:
        trial = trials.get_trial(db, args.trial)
        if trial is None:
            raise UsageError(f"no trial with id {args.trial}")
        if trial.status is not TrialStatus.COMPLETE:
            raise UsageError(f"trial {args.trial} is {trial.status}, not complete")
        search = searches.get_search(db, trial.search_id)
    ref = f"search {search.id}, trial {trial.number}"
    return Baseline(spec_from_dict(trial.arch), "trial", ref, trial.id), SearchConfig.from_config(search.config)


def _picked_trial(db: Database, search: SearchInfo, pick: str) -> TrialInfo:
    """The search's trial that `pick` names; says on stderr which it took and what the other pick would take."""
    chosen = {"reward": trials.best_trial(db, search.id),
              "accuracy": trials.most_accurate_within(db, search.id, search.target, search.objective)}
    trial = chosen[pick]
    if trial is None:
        raise UsageError(f"search {search.id} has no {PICK_LABELS[pick].removeprefix('the ')}"
                         if pick == "accuracy" else f"search {search.id} has no completed trial to scale")
    other_pick = PICKS[1 - PICKS.index(pick)]
    other = chosen[other_pick]
    alternative = ("" if other is None or other.id == trial.id else
                   f"; --pick {other_pick} takes {PICK_LABELS[other_pick]}, trial {other.number} "
                   f"({format_flops(other.flops)} FLOPs, proxy acc {other.accuracy:.3f})")
    print(f"baseline: search {search.id}, trial {trial.number}, {PICK_LABELS[pick]} ({format_flops(trial.flops)} "
          f"FLOPs, proxy acc {trial.accuracy:.3f}){alternative}", file=sys.stderr)
    return trial
