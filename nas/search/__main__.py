"""`python -m nas.search`: see `nas.search.command`."""

import sys

from nas.search.command import main

if __name__ == "__main__":
    sys.exit(main())
