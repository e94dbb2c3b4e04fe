"""`python -m db upgrade|current [--db URL]`: bring a database's schema up to date, or show its revision."""

from __future__ import annotations

import argparse
import sys

from db.session import (
    create_db_engine,
    current_revision,
    describe_url,
    head_revision,
    init_schema,
    resolve_url,
    schema_state,
)
from effnas.cli import CommandParser, add_db_option, command


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m db", description="Schema migrations of an effnas database.")
    parser.add_argument("command", choices=("upgrade", "current"),
                        help="upgrade: migrate the schema to this effnas's; current: show the schema's revision")
    add_db_option(parser)
    return parser


@command(build_parser)
def main(args: argparse.Namespace, parser: CommandParser) -> int:
    url = resolve_url(args.db)
    engine = create_db_engine(url, must_exist=True)
    if args.command == "upgrade":
        before = current_revision(engine) if schema_state(engine) != "empty" else None
        init_schema(engine)
        print(f"{describe_url(url)}: schema at revision {current_revision(engine)} (was {before or 'empty'})")
    else:
        print(f"{describe_url(url)}: revision {current_revision(engine) or 'none'}, "
              f"this effnas needs {head_revision()} ({schema_state(engine)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
