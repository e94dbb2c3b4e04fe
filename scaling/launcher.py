"""`scaling.train --nproc N`: the command started again in N processes by PyTorch's elastic launcher (what
torchrun runs), with a rank that dies stopping the others and reported in one line."""

from __future__ import annotations

import logging
import os
import socket
import sys

from effnas.cli import UsageError


def launch(nproc: int, argv: list[str], prog: str) -> int:
    """Run `python -m scaling.train` with `argv` less `--nproc` in `nproc` processes on this machine; the exit code
    of the job (130 when interrupted)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise UsageError("--nproc starts the processes itself; under torchrun leave it out")
    # The launcher logs each rank's exit at error level; the one line below says the same.
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"effnas-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{port}", max_restarts=0,
                          monitor_interval=0.5, start_method="spawn")
    rest = [part for index, part in enumerate(argv) if part != "--nproc" and (index == 0 or argv[index - 1] != "--nproc")
            and not part.startswith("--nproc=")]
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "scaling.train", *rest)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = f"signal {-failure.exitcode}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        print(f"{prog}: error: rank {rank} of {nproc} ended with {how}; the other ranks were stopped. Every "
              "finished epoch is in the last checkpoint: run the same command again to continue.", file=sys.stderr)
        return 130 if failure.exitcode == 130 else 1
    except KeyboardInterrupt:
        return 130
    return 0
