"""Training runs stopped half-way, carried across checkouts. A bench's work dir (bench/out) is not committed, so a
run longer than a session would start over from its first epoch on a fresh clone: a medium-budget family B2 took
1.3 to 3 hours on the 2-core machines here. `save` copies the work dir's database and the last checkpoint of every run stopped
half-way into a committed folder beside the bench; `restore` puts them back into a work dir that has no database,
and `scaling.train`, given that runs folder as `--out-dir`, continues each run after its last stored epoch."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from db import open_database, training  # noqa: E402
from effnas.records import TrainingRun, TrainingStatus  # noqa: E402
from nas.training.checkpoint import CHECKPOINT_NAME  # noqa: E402

RUNS = "runs"
# The exit status of an effnas command stopped by Ctrl-C (after saving what it had).
INTERRUPTED = 130


def stopped_runs(database: Path, runs: Path) -> list[TrainingRun]:
    """The runs of the database that have stored epochs but did not complete, and whose checkpoint is in `runs`."""
    db = open_database(f"sqlite:///{database}", create=False)
    return [run for run in training.list_runs(db)
            if run.status is not TrainingStatus.COMPLETE and run.epochs_done
            and (runs / f"run-{run.id}" / CHECKPOINT_NAME).is_file()]


def describe(run: TrainingRun) -> str:
    return f"run {run.id} ({run.label}, seed {run.recipe['seed']}) after epoch {run.epochs_done}"


def save(database: Path, runs: Path, partial: Path) -> list[TrainingRun]:
    """Replace `partial` by a copy of the database and the checkpoints of its stopped runs; remove it where no run
    is stopped. Run it while nothing trains into the work dir. Returns the runs carried."""
    stopped = stopped_runs(database, runs)
    shutil.rmtree(partial, ignore_errors=True)
    if not stopped:
        return []
    (partial / RUNS).mkdir(parents=True)
    # The backup API copies a consistent database even where a write-ahead log holds part of it.
    with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(partial / database.name)) as copy:
        source.backup(copy)
    for run in stopped:
        folder = partial / RUNS / f"run-{run.id}"
        folder.mkdir()
        shutil.copy2(runs / f"run-{run.id}" / CHECKPOINT_NAME, folder / CHECKPOINT_NAME)
    return stopped


def restore(database: Path, runs: Path, partial: Path) -> list[TrainingRun]:
    """Put a saved database and its checkpoints in place where the work dir has no database yet; return the stopped
    runs that can now be continued (none where there was nothing to restore)."""
    if database.exists() or not (partial / database.name).is_file():
        return []
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(partial / database.name, database)
    shutil.copytree(partial / RUNS, runs, dirs_exist_ok=True)
    return stopped_runs(database, runs)


def exit_with(main: Callable[[], int], how_to_continue: str) -> NoReturn:
    """Exit with main()'s status; a Ctrl-C (after which the stopped runs continue) is one line, status 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(f"stopped: {how_to_continue}; --save-partial --commit carries the stopped runs to a fresh clone",
              file=sys.stderr)
        sys.exit(INTERRUPTED)
