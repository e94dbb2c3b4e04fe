"""`python -m dashboard [--db URL] [--port N] [--address HOST] [streamlit options]`: start the dashboard.

It listens on 127.0.0.1 unless an address is given, sends no usage statistics, and hides Streamlit's developer
toolbar (deploy, rerun, cache) from its users.
"""

from __future__ import annotations

import sys
from pathlib import Path

from effnas.cli import CommandParser, add_db_option

STREAMLIT_DEFAULTS = {
    "--browser.gatherUsageStats": "false",
    "--client.toolbarMode": "viewer",
}


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="python -m dashboard",
        description="Browse searches, Pareto fronts, trials, architectures and families (read-only).",
        epilog="Other --server.* / --theme.* options go to Streamlit unchanged.",
    )
    add_db_option(parser)
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (8501)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to listen on (127.0.0.1: this machine only; Streamlit has no authentication)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    own, streamlit_options = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    stray = [option for option in streamlit_options if option.startswith("-") and "." not in option]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    from streamlit.web import cli

    app = Path(__file__).with_name("app.py")
    options = [*(item for pair in STREAMLIT_DEFAULTS.items() for item in pair),
               "--server.address", own.address, "--server.port", str(own.port), *streamlit_options]
    app_args = ["--db", own.db] if own.db else []
    sys.argv = ["streamlit", "run", str(app), *options, "--", *app_args]
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
