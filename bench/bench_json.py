"""What every bench writes next to itself: its results as JSON, with the command, date, machine and commit that
made them, and every path inside the repository written relative to it so that a file reads the same on any
machine. A name ending in .json.gz is written and read gzipped (for results too large to commit plain)."""

from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Written by write_json itself; a bench's own results never set them.
PROVENANCE = ("command", "date", "machine", "commit")


def machine_description() -> str:
    """The CPU architecture and core count: a bench figure means little without the machine it came from."""
    return f"{platform.machine()}, {os.cpu_count()} cores"


def default_path(script: str, suffix: str = ".json") -> Path:
    """bench/<script>.json (or another suffix such as .json.gz), the committed copy of a bench's latest results."""
    return HERE / f"{Path(script).stem}{suffix}"


def current_commit() -> str | None:
    """The commit the checkout is at, marked -dirty where tracked files differ from it; None outside git."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def relative(path: Path | str) -> str:
    """`path` relative to the repository where it lies inside it, else as given."""
    resolved = Path(path).resolve()
    return resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(path)


def read_json(path: Path | str) -> dict[str, Any]:
    """A bench's results as written by write_json (plain or gzipped)."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return json.loads(raw)


def write_json(path: Path | str, results: dict[str, Any]) -> None:
    """Write results with their provenance, atomically (a cut-off run leaves the old file)."""
    path = Path(path)
    payload = {
        "command": " ".join([relative(sys.argv[0]), *(relative(a) if a.startswith("/") else a for a in sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine_description(),
        "commit": current_commit(),
        **{key: value for key, value in results.items() if key not in PROVENANCE},
    }
    text = json.dumps(payload, indent=None if path.name.endswith(".gz") else 2) + "\n"
    text = text.replace(f'"{ROOT.as_posix()}/', '"')  # paths inside the repository, in any field
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(gzip.compress(text.encode(), mtime=0) if path.name.endswith(".gz") else text.encode())
    tmp.replace(path)
    print(f"results written to {relative(path)}")
