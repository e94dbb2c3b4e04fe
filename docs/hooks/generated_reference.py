"""MkDocs hook: pages that cannot drift from the code. `<!-- cli-reference -->` becomes every command's `--help`,
from its argparse parser; `<!-- bench-list -->` becomes the bench list of `python -m bench`."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_reference() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from effnas.__main__ import COMMANDS

    parts = ["Every command is `python -m <module>` or, the same, `effnas <command>`. This page is generated from "
             "the commands' own parsers when the docs are built."]
    with _columns(100):
        for name, (module, about) in COMMANDS.items():
            parser = importlib.import_module(module).build_parser()
            parts.append(f"## `effnas {name}`\n\n{about[0].upper() + about[1:]}.\n\n```text\n{parser.format_help()}```")
    return "\n\n".join(parts)


def bench_list() -> str:
    spec = importlib.util.spec_from_file_location("bench_driver", ROOT / "bench" / "__main__.py")
    driver = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = driver  # dataclasses look their module up while the class is made
    spec.loader.exec_module(driver)
    rows = ["| bench | budget on 2 cores | resumable | what it measures | needs |", "|---|---|---|---|---|"]
    rows += [f"| `{b.name}` | {driver.format_minutes(b.minutes)} | {'yes' if b.resumable else ''} | {b.what} | "
             f"{b.needs} |" for b in driver.BENCHES]
    chain = " → ".join(f"`{name}`" for name in driver.SURROGATE_CHAIN)
    return "\n".join(rows) + f"\n\nThe surrogate chain, in order (`python -m bench run surrogate-chain`): {chain}."


@contextlib.contextmanager
def _columns(width: int):
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


GENERATED = {"<!-- cli-reference -->": cli_reference, "<!-- bench-list -->": bench_list}


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - MkDocs' hook signature
    for marker, render in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
