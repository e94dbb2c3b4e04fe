"""`effnas <command> [options]`: every effnas command under one name, the same as `python -m <module>`."""

from __future__ import annotations

import importlib
import sys

from effnas.cli import USAGE_ERROR

COMMANDS = {
    "search": ("nas.search.command", "search for a baseline network under a FLOPs or latency budget"),
    "export": ("nas.export", "every trial of a search as CSV or JSON"),
    "grow": ("scaling.grow", "grow a baseline into a B0..B7 family by a scaling rule"),
    "train": ("scaling.train", "train a found network or a family's members (with seeds) to the end: test accuracy"),
    "compare": ("scaling.compare", "trained families side by side: test accuracy over seeds against FLOPs"),
    "export-family": ("scaling.export", "write a family as ONNX, torch.export programs, safetensors, int8 and a model card"),
    "predict": ("scaling.predict", "classify image files with a trained network"),
    "dashboard": ("dashboard.__main__", "open the dashboard"),
    "db": ("db.__main__", "upgrade a database's schema or show its revision"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: effnas <command> [options]   (effnas <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else USAGE_ERROR
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"effnas: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return USAGE_ERROR
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
