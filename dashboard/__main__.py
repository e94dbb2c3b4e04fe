"""`python -m dashboard [--db URL] [streamlit options]`: start the dashboard with Streamlit.

It listens on 127.0.0.1 unless a `--server.address` is given, and sends no usage statistics.
"""

import argparse
import sys
from pathlib import Path

from streamlit.web import cli

DEFAULTS = ["--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard", add_help=False)
    parser.add_argument("--db", default=None)
    own, streamlit_options = parser.parse_known_args(sys.argv[1:])
    app = Path(__file__).with_name("app.py")
    app_args = ["--db", own.db] if own.db else []
    sys.argv = ["streamlit", "run", str(app), *DEFAULTS, *streamlit_options, "--", *app_args]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
