"""`python -m nas.export --search ID --format csv|json [--out FILE]`: every trial of a search, for scripts."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from db import Database, open_database, resolve_url, searches, trials
from effnas.cli import CommandParser, UsageError, add_db_option, command, fail
from nas.evaluation.latency import LATENCY_ENVIRONMENT
from nas.space.flops import FLOPS_CONVENTION

FORMATS = ("csv", "json")

TRIAL_FIELDS = (
    "id", "number", "role", "status", "fidelity", "accuracy", "flops", "params", "reward", "epochs", "partial",
    "first_rung_reward", "supernet_accuracy", "supernet_reward", "latency_ms", "measured_latency_ms",
    "zero_cost_score", "build_seconds", "train_seconds", "eval_seconds", "attempts", "worker", "started_at",
    "finished_at", "error",
)


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value) if isinstance(value, Enum) else value


def search_export(db: Database, search_id: int) -> dict[str, Any]:
    """The search (its configuration) and all its trials in trial order, as plain data."""
    search = searches.get_search(db, search_id)
    if search is None:
        raise UsageError(f"no search with id {search_id}")
    return {
        "search": {
            "id": search.id, "name": search.name, "status": search.status.value, "strategy": search.strategy,
            "dataset": search.dataset, "target_flops": search.target_flops, "resolution": search.resolution,
            "seed": search.seed, "config": search.config, "created_at": _plain(search.created_at),
            "started_at": _plain(search.started_at), "finished_at": _plain(search.finished_at),
            "flops_convention": FLOPS_CONVENTION, "target_latency_ms": search.target_latency_ms,
            # What the latency figures (latency_ms predicted, measured_latency_ms) were measured on.
            "latency_measured_on": search.config.get(LATENCY_ENVIRONMENT),
        },
        "trials": [
            {**{name: _plain(getattr(t, name)) for name in TRIAL_FIELDS}, "block_strings": t.block_strings.split(),
             "arch": t.arch}
            for t in trials.list_trials(db, search_id)
        ],
    }


def to_csv(export: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*TRIAL_FIELDS, "block_strings"])
    for trial in export["trials"]:
        writer.writerow([*(trial[name] for name in TRIAL_FIELDS), " ".join(trial["block_strings"])])
    return buffer.getvalue()


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m nas.export", description="Export every trial of a search.")
    parser.add_argument("--search", type=int, required=True, metavar="ID", help="the search's id")
    parser.add_argument("--format", choices=FORMATS, default="json", help="output format (json)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_db_option(parser)
    return parser


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    if args.out and Path(args.out).exists() and not args.force:
        raise UsageError(f"{args.out} already exists; use --force to overwrite")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise UsageError(f"folder of --out {args.out} does not exist")
    export = search_export(open_database(resolve_url(args.db), create=False), args.search)
    text = to_csv(export) if args.format == "csv" else json.dumps(export, indent=2) + "\n"
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            fail(f"cannot write {args.out}: {exc.strerror}", prog=parser.prog)
        print(f"Wrote {len(export['trials'])} trials of search {args.search} to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
