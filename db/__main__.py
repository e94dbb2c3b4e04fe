"""`python -m db upgrade|current [--db URL]`: bring a database's schema up to date, or show its revision."""

from __future__ import annotations

import argparse
import sys

from db.session import (
    DatabaseError,
    create_db_engine,
    current_revision,
    describe_url,
    head_revision,
    init_schema,
    resolve_url,
    schema_state,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"python -m db: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m db", description="Schema migrations of an effnas database.")
    parser.add_argument("command", choices=("upgrade", "current"))
    parser.add_argument("--db", default=None, help="database URL or SQLite path (default $EFFNAS_DB or effnas.db)")
    args = parser.parse_args(argv)
    url = resolve_url(args.db)
    try:
        engine = create_db_engine(url, must_exist=True)
        if args.command == "upgrade":
            before = current_revision(engine) if schema_state(engine) != "empty" else None
            init_schema(engine)
            print(f"{describe_url(url)}: schema at revision {current_revision(engine)} (was {before or 'empty'})")
        else:
            print(f"{describe_url(url)}: revision {current_revision(engine) or 'none'}, "
                  f"this effnas needs {head_revision()} ({schema_state(engine)})")
    except DatabaseError as exc:
        print(f"python -m db: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
