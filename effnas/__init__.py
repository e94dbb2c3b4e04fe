"""effnas: `load_member(folder, "B2")` reads a member back from an export folder (see `scaling.exported`). The
package also holds what every effnas command shares (`effnas.cli`), the records (`effnas.records`) and the
`effnas <command>` console script."""

from typing import Any

__all__ = ["load_member"]


def __getattr__(name: str) -> Any:
    # Imported on first use: effnas.cli and effnas.records, imported by every command, must not pull in torch.
    if name == "load_member":
        from scaling.exported import load_member

        return load_member
    raise AttributeError(f"module 'effnas' has no attribute {name!r}")
