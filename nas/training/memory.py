"""Running out of memory as an error to report, not a kill by the kernel."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from pathlib import Path

# The messages PyTorch's CPU allocator and CUDA caching allocator raise with.
_OUT_OF_MEMORY = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")


def _kib_field(path: str, key: str) -> int | None:
    """A `key: N kB` line of a /proc file, in bytes; None where there is no such file or line."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def cpu_memory_limit() -> Iterator[None]:
    """Cap this process's address space (and its workers') at what it holds now plus the memory the machine has
    available, so that an allocation past it fails with an exception instead of waking the kernel's OOM killer.
    Where /proc is missing, or a lower limit is already set, nothing changes."""
    available, held = _kib_field("/proc/meminfo", "MemAvailable"), _kib_field("/proc/self/status", "VmSize")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if available is None or held is None:
        yield
        return
    limit = held + available
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(text in str(exc).lower() for text in _OUT_OF_MEMORY)
