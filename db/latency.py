"""The latency table: measured latencies of network parts and whole networks, one row per (protocol, item).

Guarantees: a protocol's figures are found only by its own key (another thread count, batch, runtime version or
CPU is another table); storing an item already stored keeps the first figure (a racing writer's row wins, the
loser's measurement is dropped), so predictions made from the table never change under a running search.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.models import LatencyMeasurementRecord
from db.session import Database
from effnas.records import Latency


def load_latencies(db: Database, protocol_key: str, item: str | None = None) -> dict[str, Latency]:
    """Every stored figure of one protocol, by item; only `item`'s, when given."""
    query = select(LatencyMeasurementRecord).where(LatencyMeasurementRecord.protocol_key == protocol_key)
    if item is not None:
        query = query.where(LatencyMeasurementRecord.item == item)
    with db.reading() as session:
        rows = session.scalars(query).all()
        return {row.item: _latency(row) for row in rows}


def _latency(row: LatencyMeasurementRecord) -> Latency:
    return Latency(row.median_ms, row.iqr_ms, row.runs, row.resolution, row.raw_median_ms)


def store_latency(db: Database, protocol_key: str, protocol: dict[str, Any], item: str, latency: Latency) -> Latency:
    """Store one figure; the figure stored, which is another writer's where that one stored the item first."""
    try:
        with db.writing() as session:
            session.add(LatencyMeasurementRecord(
                protocol_key=protocol_key, protocol=protocol, item=item, median_ms=latency.median_ms,
                iqr_ms=latency.iqr_ms, runs=latency.runs, resolution=latency.resolution,
                raw_median_ms=latency.raw_median_ms,
            ))
        return latency
    except IntegrityError:
        with db.reading() as session:
            return _latency(session.scalars(select(LatencyMeasurementRecord).where(
                LatencyMeasurementRecord.protocol_key == protocol_key, LatencyMeasurementRecord.item == item)).one())
