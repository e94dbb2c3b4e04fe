"""One convention for every effnas command: `main(argv) -> int` made by `@command`, a usage error is one line and
exit code 2, the same `--db` option everywhere, and FLOPs and durations read and written the same way."""

from __future__ import annotations

import argparse
import functools
import math
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from db.session import DB_HELP, DatabaseError

USAGE_ERROR = 2

_SUFFIXES = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


class UsageError(Exception):
    """Bad input from the user; the message is the one line they see."""


class CommandParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (and exit code 2), not a usage dump; it keeps the
    command line it parsed (`argv`) for a command that starts itself again in other processes."""

    argv: list[str] = []

    def error(self, message: str) -> NoReturn:
        fail(message, prog=self.prog)

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):  # noqa: ANN201
        self.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(self.argv, namespace)


# Third-party warnings that tell a user of effnas nothing they can act on, each named by message, category and the
# module that warns. Anything not listed stays visible: a frozen NNI against a moving PyTorch announces its next
# break in exactly such warnings.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # NNI 3.0 walks torch.nn at import and wraps every nn.Module class; it warns about each newer torch.nn name that
    # is not one (Buffer, LinearCrossEntropyOptions in torch 2.13), which it then leaves unwrapped, as it should.
    (r".* is found to be not a nn\.Module", RuntimeWarning, r"nni\.nas\.nn\.pytorch\.layers"),
    # NNI warns about an SSH password in a remote machineList in a multi-line warning; the search says it in one
    # line of its banner instead (nas.search.progress.print_banner).
    (r"SSH password will be exposed", UserWarning, r"nni\.experiment\.config\.training_services\.remote"),
    # torch 2.13's exporters (torch.export, torch.onnx) copy their own pytree specs and warn, from copyreg, about
    # an isinstance check inside torch itself; the exported programs are unaffected (scaling.export's tests).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"copyreg"),
)


def filter_known_warnings() -> None:
    """Keep the warnings of KNOWN_WARNINGS out of the terminal; every other warning is shown as Python would."""
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


Main = Callable[[list[str] | None], int]


def command(build_parser: Callable[[], CommandParser]) -> Callable[[Callable[..., int]], Main]:
    """The skeleton every command's `main(argv) -> int` shares: build the parser and parse `argv`, keep the known
    third-party warnings out (all of them show with `--verbose`), run the command as `run(args, parser)`, and turn
    bad input (`UsageError`, or a `DatabaseError` naming a database that cannot be used) into one line and exit
    code 2 instead of a traceback."""

    def decorate(run: Callable[[argparse.Namespace, CommandParser], int]) -> Main:
        @functools.wraps(run)
        def main(argv: list[str] | None = None) -> int:
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "verbose", False):
                filter_known_warnings()
            try:
                return run(args, parser)
            except (UsageError, DatabaseError) as exc:
                fail(str(exc), prog=parser.prog)

        return main

    return decorate


def add_db_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--db`, the same in every command."""
    parser.add_argument("--db", default=None, metavar="URL", help=DB_HELP)


def fail(message: str, code: int = USAGE_ERROR, prog: str | None = None) -> NoReturn:
    print(f"{prog or _prog()}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _prog() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return f"python -m {spec.name.removesuffix('.__main__')}" if spec is not None and spec.name else "effnas"


def finite_float(text: str) -> float:
    """An argparse type for every float option: a number, not NaN or infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def at_least(flag: str, value: float | None, minimum: float) -> None:
    """UsageError naming `flag` when a value given is below `minimum`; None (left out) passes."""
    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be at least {minimum:g}, got {value:g}")


def parse_flops(text: str) -> int:
    """'400M', '0.4G', '4e8', '400000000' -> 400000000 multiply-accumulates."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGBT]?)\s*(?:FLOPs?|MACs?)?\s*", str(text), re.I)
    if match is None:
        raise UsageError(f"cannot read FLOPs {text!r}; write e.g. 400M, 0.4G, 4e8 or 400000000")
    value = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
    if not math.isfinite(value) or value < 1:
        raise UsageError(f"FLOPs must be positive, got {text!r}")
    return int(round(value))


_LATENCY_UNITS = {"": 1.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}


def parse_latency(text: str) -> float:
    """'3ms', '0.5 ms', '800us', '0.003s', '3' (milliseconds) -> milliseconds."""
    match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|us|µs|s)?\s*", str(text), re.I)
    if match is None:
        raise UsageError(f"cannot read latency {text!r}; write e.g. 3ms, 800us or 0.003s")
    value = float(match.group(1)) * _LATENCY_UNITS[(match.group(2) or "").lower()]
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"latency must be positive, got {text!r}")
    return value


def parse_seeds(text: str, flag: str = "--seeds") -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2): distinct seeds of 0 or more, in the order given."""
    parts = [part.strip() for part in str(text).split(",")]
    if not all(re.fullmatch(r"[0-9]+", part) for part in parts):
        raise UsageError(f"cannot read {flag} {text!r}; write whole numbers of 0 or more separated by commas, e.g. 0,1")
    seeds = tuple(int(part) for part in parts)
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"{flag} {text!r} repeats a seed")
    return seeds


def parse_duration(text: str) -> float | None:
    """'90s', '10m', '1.5h', '600' (seconds) -> seconds; 'none' -> None (no limit)."""
    if str(text).strip().lower() == "none":
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text), re.I)
    if match is None:
        raise UsageError(f"cannot read duration {text!r}; write e.g. 90s, 10m or 1.5h")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2).lower()]
    if seconds <= 0:
        raise UsageError(f"duration must be positive, got {text!r}")
    return seconds


# Where no terminal shows a bar (output to a log, as under nohup), long work prints a line at least this often:
# a supernet epoch takes minutes on 2 cores, a medium-budget training epoch about 14.
LOG_INTERVAL_SECONDS = 60.0


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
