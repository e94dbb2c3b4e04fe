"""Training runs: full trainings of a family member or any architecture, epoch by epoch.

Guarantees: `record_epoch` appends one point to the run's curve and counts the epoch in one transaction, so
the stored curve always matches the last checkpoint written before it; a run's results (accuracies, weights
file and its SHA-256) are written together when it ends; runs are never deleted.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import select, update

from db.models import TrainingRunRecord, utcnow
from db.session import Database
from effnas.records import TrainingRun, TrainingStatus

_FIELDS = tuple(f.name for f in fields(TrainingRun))
_NEW_FIELDS = _FIELDS[:_FIELDS.index("id")]
_RESULT_FIELDS = {"best_epoch", "chosen_weights", "val_accuracy", "test_accuracy", "seconds", "weights_path",
                  "weights_sha256", "error", "checkpoint_path"}


def _run(row: TrainingRunRecord) -> TrainingRun:
    values = {name: getattr(row, name) for name in _FIELDS}
    values.update(status=TrainingStatus(row.status), curve=list(row.curve or []))
    return TrainingRun(**values)


def create_run(db: Database, run: TrainingRun) -> int:
    """Store a new run (its fields before `id`) in status running, with no epoch done; its id."""
    with db.writing() as session:
        record = TrainingRunRecord(**{name: getattr(run, name) for name in _NEW_FIELDS},
                                   status=TrainingStatus.RUNNING.value, epochs_done=0, curve=[])
        session.add(record)
        session.flush()
        return record.id


def get_run(db: Database, run_id: int) -> TrainingRun | None:
    with db.reading() as session:
        row = session.get(TrainingRunRecord, run_id)
        return None if row is None else _run(row)


def record_epoch(db: Database, run_id: int, point: dict[str, Any], checkpoint_path: str) -> None:
    """Append one epoch's point (loss, accuracies, seconds) to the curve and count it."""
    with db.writing() as session:
        session.get(TrainingRunRecord, run_id).append_epoch(point, checkpoint_path)


def resume_run(db: Database, run_id: int, worker: str) -> None:
    """Mark a stopped run running again, in `worker`."""
    with db.writing() as session:
        session.execute(update(TrainingRunRecord).where(TrainingRunRecord.id == run_id).values(
            status=TrainingStatus.RUNNING.value, error=None, finished_at=None, worker=worker))


def end_run(db: Database, run_id: int, status: TrainingStatus, **results: Any) -> None:
    """End a run: complete with its results, or failed or interrupted (with the error)."""
    unknown = set(results) - _RESULT_FIELDS
    if unknown:
        raise ValueError(f"not a training result: {', '.join(sorted(unknown))}")
    with db.writing() as session:
        session.execute(update(TrainingRunRecord).where(TrainingRunRecord.id == run_id).values(
            status=status.value, finished_at=utcnow(), **results))


def list_runs(db: Database, *, family_id: int | None = None, dataset: str | None = None,
              recipe_key: str | None = None) -> list[TrainingRun]:
    """Runs, oldest first; only those of one family, one data set or one recipe when asked."""
    query = select(TrainingRunRecord).order_by(TrainingRunRecord.id)
    if family_id is not None:
        query = query.where(TrainingRunRecord.family_id == family_id)
    if dataset is not None:
        query = query.where(TrainingRunRecord.dataset == dataset)
    if recipe_key is not None:
        query = query.where(TrainingRunRecord.recipe_key == recipe_key)
    with db.reading() as session:
        return [_run(row) for row in session.scalars(query)]
