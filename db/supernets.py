"""Supernets: a weight-sharing supernet of a search space on one task, found by what defines it.

Guarantees: one supernet per key (the unique constraint makes a racing create fail rather than duplicate);
`record_epoch` appends one point to the curve and counts the epoch in one transaction, after the checkpoint it
describes was written; the weights file and its SHA-256 are stored together with the complete status.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import select

from db.models import SupernetRecord, utcnow
from db.session import Database
from effnas.records import Supernet, TrainingStatus

_FIELDS = tuple(f.name for f in fields(Supernet))
_NEW_FIELDS = ("key", "definition", "dataset", "resolution", "stem_stride", "epochs")


def _supernet(row: SupernetRecord) -> Supernet:
    values = {name: getattr(row, name) for name in _FIELDS}
    values.update(status=TrainingStatus(row.status), curve=list(row.curve or []))
    return Supernet(**values)


def find_supernet(db: Database, key: str) -> Supernet | None:
    with db.reading() as session:
        row = session.scalars(select(SupernetRecord).where(SupernetRecord.key == key)).first()
        return None if row is None else _supernet(row)


def get_supernet(db: Database, supernet_id: int) -> Supernet | None:
    with db.reading() as session:
        row = session.get(SupernetRecord, supernet_id)
        return None if row is None else _supernet(row)


def create_supernet(db: Database, supernet: Supernet, worker: str) -> Supernet:
    """Store a new supernet, running in `worker`, with no epoch done."""
    with db.writing() as session:
        row = SupernetRecord(**{name: getattr(supernet, name) for name in _NEW_FIELDS},
                             status=TrainingStatus.RUNNING.value, epochs_done=0, curve=[], worker=worker)
        session.add(row)
        session.flush()
        return _supernet(row)


def resume_supernet(db: Database, supernet_id: int, worker: str) -> None:
    """Mark a stopped supernet training running again, in `worker`."""
    with db.writing() as session:
        row = session.get(SupernetRecord, supernet_id)
        row.status, row.error, row.worker = TrainingStatus.RUNNING.value, None, worker


def record_epoch(db: Database, supernet_id: int, point: dict[str, Any], checkpoint_path: str) -> None:
    with db.writing() as session:
        session.get(SupernetRecord, supernet_id).append_epoch(point, checkpoint_path)


def finish_supernet(db: Database, supernet_id: int, weights_path: str, weights_sha256: str, seconds: float) -> None:
    with db.writing() as session:
        row = session.get(SupernetRecord, supernet_id)
        row.status, row.weights_path, row.weights_sha256 = TrainingStatus.COMPLETE.value, weights_path, weights_sha256
        row.seconds, row.finished_at = seconds, utcnow()


def stop_supernet(db: Database, supernet_id: int, status: TrainingStatus, error: str) -> None:
    """Mark a supernet training interrupted or failed, with why."""
    with db.writing() as session:
        row = session.get(SupernetRecord, supernet_id)
        row.status, row.error = status.value, error
