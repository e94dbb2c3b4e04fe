"""`python -m dashboard [--db URL] [streamlit options]`: start the dashboard with Streamlit."""

import sys
from pathlib import Path

from streamlit.web import cli


def main() -> None:
    app = Path(__file__).with_name("app.py")
    sys.argv = ["streamlit", "run", str(app), "--", *sys.argv[1:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
