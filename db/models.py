"""The ORM models: searches and their trials, families and their members and grid points.

Only plain column types (JSON, Text, BigInteger, DateTime) so the same schema runs on SQLite and PostgreSQL.
Architectures are stored as JSON (our spec format) and as canonical block strings; `arch_key` is a SHA-256 of
the canonical architecture so that lookups by architecture use a short indexed column.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from effnas.records import SearchStatus, TrainingStatus, TrialRole, TrialStatus


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class SearchRecord(Base):
    __tablename__ = "searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=SearchStatus.RUNNING.value, index=True)
    strategy: Mapped[str] = mapped_column(String(40))
    dataset: Mapped[str] = mapped_column(String(200))
    # 0 for a latency search (db.searches reads it as None).
    target_flops: Mapped[int] = mapped_column(BigInteger)
    target_latency_ms: Mapped[Optional[float]] = mapped_column(Float)
    resolution: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    max_trials: Mapped[Optional[int]] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[Optional[datetime]]
    finished_at: Mapped[Optional[datetime]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker: Mapped[Optional[str]] = mapped_column(String(200))

    trials: Mapped[list[TrialRecord]] = relationship(back_populates="search", cascade="all, delete-orphan")


class TrialRecord(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("search_id", "number", name="uq_trials_search_number"),
        UniqueConstraint("search_id", "role", "arch_key", name="uq_trials_search_role_arch"),
        Index("ix_trials_search_arch", "search_id", "arch_key"),
        Index("ix_trials_search_status", "search_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20), default=TrialRole.CANDIDATE.value)
    status: Mapped[str] = mapped_column(String(20), default=TrialStatus.RUNNING.value)
    arch: Mapped[dict[str, Any]] = mapped_column(JSON)
    block_strings: Mapped[str] = mapped_column(Text)
    arch_key: Mapped[str] = mapped_column(String(64))
    sample: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    accuracy: Mapped[Optional[float]] = mapped_column(Float)
    flops: Mapped[Optional[int]] = mapped_column(BigInteger)
    params: Mapped[Optional[int]] = mapped_column(BigInteger)
    reward: Mapped[Optional[float]] = mapped_column(Float)
    zero_cost_score: Mapped[Optional[float]] = mapped_column(Float)
    # Proxy epochs trained; partial: stopped by successive halving before the full proxy (never the winner).
    epochs: Mapped[Optional[int]] = mapped_column(Integer)
    partial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    first_rung_reward: Mapped[Optional[float]] = mapped_column(Float)
    # Scored on a supernet path (stored partial, 0 epochs, until proxy-trained): the accuracy and reward there.
    supernet_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    supernet_reward: Mapped[Optional[float]] = mapped_column(Float)
    # A latency search's: predicted by the latency table (every trial), measured (the winner and the front), in ms.
    latency_ms: Mapped[Optional[float]] = mapped_column(Float)
    measured_latency_ms: Mapped[Optional[float]] = mapped_column(Float)
    build_seconds: Mapped[Optional[float]] = mapped_column(Float)
    train_seconds: Mapped[Optional[float]] = mapped_column(Float)
    eval_seconds: Mapped[Optional[float]] = mapped_column(Float)
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[Optional[datetime]]

    search: Mapped[SearchRecord] = relationship(back_populates="trials")


class FamilyRecord(Base):
    __tablename__ = "families"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    baseline_kind: Mapped[str] = mapped_column(String(20))
    baseline_trial_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("trials.id", ondelete="SET NULL"), index=True
    )
    baseline_ref: Mapped[Optional[str]] = mapped_column(Text)
    baseline_arch: Mapped[dict[str, Any]] = mapped_column(JSON)
    rule: Mapped[str] = mapped_column(String(20), default="compound", server_default="compound")
    coefficient_source: Mapped[str] = mapped_column(String(20))
    alpha: Mapped[Optional[float]] = mapped_column(Float)
    beta: Mapped[Optional[float]] = mapped_column(Float)
    gamma: Mapped[Optional[float]] = mapped_column(Float)
    phi_max: Mapped[int] = mapped_column(Integer)
    base_resolution: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    members: Mapped[list[FamilyMemberRecord]] = relationship(
        back_populates="family", cascade="all, delete-orphan", order_by="FamilyMemberRecord.phi"
    )
    grid_points: Mapped[list[GridPointRecord]] = relationship(
        back_populates="family", cascade="all, delete-orphan", order_by="GridPointRecord.id"
    )


class FamilyMemberRecord(Base):
    __tablename__ = "family_members"
    __table_args__ = (UniqueConstraint("family_id", "phi", name="uq_family_members_phi"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[int] = mapped_column(ForeignKey("families.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(40))
    phi: Mapped[int] = mapped_column(Integer)
    width: Mapped[float] = mapped_column(Float)
    depth: Mapped[float] = mapped_column(Float)
    resolution_mult: Mapped[float] = mapped_column(Float)
    resolution: Mapped[int] = mapped_column(Integer)
    dropout: Mapped[float] = mapped_column(Float)
    params: Mapped[int] = mapped_column(BigInteger)
    flops: Mapped[int] = mapped_column(BigInteger)
    flops_ratio: Mapped[float] = mapped_column(Float)
    arch: Mapped[dict[str, Any]] = mapped_column(JSON)
    block_strings: Mapped[str] = mapped_column(Text)
    accuracy: Mapped[Optional[float]] = mapped_column(Float)
    train_seconds: Mapped[Optional[float]] = mapped_column(Float)
    latency: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)

    family: Mapped[FamilyRecord] = relationship(back_populates="members")


class GridPointRecord(Base):
    """One point of the compound-scaling grid search (alpha, beta, gamma at phi = 1)."""

    __tablename__ = "scaling_grid_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[int] = mapped_column(ForeignKey("families.id", ondelete="CASCADE"), index=True)
    alpha: Mapped[float] = mapped_column(Float)
    beta: Mapped[float] = mapped_column(Float)
    gamma: Mapped[float] = mapped_column(Float)
    flops_factor: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20))
    accuracy: Mapped[Optional[float]] = mapped_column(Float)
    flops: Mapped[Optional[int]] = mapped_column(BigInteger)
    params: Mapped[Optional[int]] = mapped_column(BigInteger)
    resolution: Mapped[Optional[int]] = mapped_column(Integer)
    error: Mapped[Optional[str]] = mapped_column(Text)
    arch: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)

    family: Mapped[FamilyRecord] = relationship(back_populates="grid_points")


class EpochCurve:
    """What a record trained epoch by epoch (a training run, a supernet) does with each epoch it stores: the
    mapped class has the curve, epochs_done and checkpoint_path columns."""

    def append_epoch(self, point: dict[str, Any], checkpoint_path: str) -> None:
        """The epoch's point (loss, accuracies, seconds) on the curve, counted, with the checkpoint it was saved in."""
        self.curve = [*(self.curve or []), point]
        self.epochs_done = len(self.curve)
        self.checkpoint_path = checkpoint_path


class TrainingRunRecord(EpochCurve, Base):
    """One full training of one network: a family member or any architecture, on one data set with one recipe."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[Optional[int]] = mapped_column(ForeignKey("families.id", ondelete="SET NULL"), index=True)
    member: Mapped[Optional[str]] = mapped_column(String(40))
    trial_id: Mapped[Optional[int]] = mapped_column(ForeignKey("trials.id", ondelete="SET NULL"))
    label: Mapped[str] = mapped_column(String(200))
    arch: Mapped[dict[str, Any]] = mapped_column(JSON)
    block_strings: Mapped[str] = mapped_column(Text)
    dataset: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    recipe_key: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str] = mapped_column(String(40))
    resolution: Mapped[int] = mapped_column(Integer)
    flops: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), default=TrainingStatus.RUNNING.value, index=True)
    error: Mapped[Optional[str]] = mapped_column(Text)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    curve: Mapped[list[Any]] = mapped_column(JSON, default=list)
    best_epoch: Mapped[Optional[int]] = mapped_column(Integer)
    chosen_weights: Mapped[Optional[str]] = mapped_column(String(10))
    val_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    test_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    seconds: Mapped[Optional[float]] = mapped_column(Float)
    checkpoint_path: Mapped[Optional[str]] = mapped_column(Text)
    weights_path: Mapped[Optional[str]] = mapped_column(Text)
    weights_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[Optional[datetime]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SupernetRecord(EpochCurve, Base):
    __tablename__ = "supernets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset: Mapped[str] = mapped_column(String(200))
    resolution: Mapped[int] = mapped_column(Integer)
    stem_stride: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=TrainingStatus.RUNNING.value)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    curve: Mapped[list[Any]] = mapped_column(JSON, default=list)
    checkpoint_path: Mapped[Optional[str]] = mapped_column(Text)
    weights_path: Mapped[Optional[str]] = mapped_column(Text)
    weights_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    seconds: Mapped[Optional[float]] = mapped_column(Float)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[Optional[datetime]]


class LatencyMeasurementRecord(Base):
    """One measured latency of a part (stem, block, head) or a whole network, under one protocol (`protocol_key`,
    a hash of `protocol`)."""

    __tablename__ = "latency_measurements"
    __table_args__ = (UniqueConstraint("protocol_key", "item", name="uq_latency_protocol_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_key: Mapped[str] = mapped_column(String(64), index=True)
    protocol: Mapped[dict[str, Any]] = mapped_column(JSON)
    item: Mapped[str] = mapped_column(Text)
    median_ms: Mapped[float] = mapped_column(Float)
    iqr_ms: Mapped[float] = mapped_column(Float)
    raw_median_ms: Mapped[Optional[float]] = mapped_column(Float)
    runs: Mapped[int] = mapped_column(Integer)
    resolution: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(default=utcnow)
