"""The network a family is grown from, or a single network is trained: the best trial of a search, one trial, a
spec file, or an official network by name."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from db import open_database, searches, trials
from effnas.cli import UsageError
from effnas.records import TrialStatus
from nas.search.config import SearchConfig
from nas.space.spec import ArchSpec, SpecError, from_json, named_spec, spec_from_dict

# The options that name a baseline; a command takes exactly one of them.
BASELINE_OPTIONS = ("search", "trial", "arch", "baseline")


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
        trial = trials.best_trial(db, args.search)
        if trial is None:
            raise UsageError(f"search {args.search} has no completed trial to scale")
    else:
        trial = trials.get_trial(db, args.trial)
        if trial is None:
            raise UsageError(f"no trial with id {args.trial}")
        if trial.status is not TrialStatus.COMPLETE:
            raise UsageError(f"trial {args.trial} is {trial.status}, not complete")
        search = searches.get_search(db, trial.search_id)
    ref = f"search {search.id}, trial {trial.number}"
    return Baseline(spec_from_dict(trial.arch), "trial", ref, trial.id), SearchConfig.from_config(search.config)
