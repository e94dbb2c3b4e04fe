"""What every bench writes next to itself: its results as JSON, with the machine and the command that made them."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def machine_description() -> str:
    """The CPU architecture and core count: a bench figure means little without the machine it came from."""
    return f"{platform.machine()}, {os.cpu_count()} cores"


def default_path(script: str) -> Path:
    """bench/<script>.json, the committed copy of a bench's latest results."""
    return HERE / f"{Path(script).stem}.json"


def write_json(path: Path | str, results: dict[str, Any]) -> None:
    """Write results with the machine, the date and the command line, atomically (a cut-off run leaves the old file)."""
    path = Path(path)
    payload = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine_description(),
        **results,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    print(f"results written to {path}")
