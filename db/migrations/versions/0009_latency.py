"""latency_measurements (the latency table: parts and whole networks measured under one protocol),
searches.target_latency_ms (a latency search's target; its target_flops is then 0, which db.searches reads as
none: making the column nullable would recreate the searches table on SQLite, whose drop cascades to the trials), trials.latency_ms /
trials.measured_latency_ms (predicted and measured latency) and family_members.latency (measured at batch 1 and
32); searches stored before all targeted FLOPs, and members stored before were never measured

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 22:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "latency_measurements",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("protocol_key", sa.String(64), nullable=False, index=True),
        sa.Column("protocol", sa.JSON(), nullable=False),
        sa.Column("item", sa.Text(), nullable=False),
        sa.Column("median_ms", sa.Float(), nullable=False),
        sa.Column("iqr_ms", sa.Float(), nullable=False),
        sa.Column("raw_median_ms", sa.Float(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("protocol_key", "item", name="uq_latency_protocol_item"),
    )
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("target_latency_ms", sa.Float(), nullable=True))
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("latency_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("measured_latency_ms", sa.Float(), nullable=True))
    with op.batch_alter_table("family_members") as batch:
        batch.add_column(sa.Column("latency", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later): batch mode would recreate searches and trials, and
    # on SQLite dropping the old table cascades to the rows that refer to it.
    for table, column in (("family_members", "latency"), ("trials", "measured_latency_ms"), ("trials", "latency_ms"),
                          ("searches", "target_latency_ms")):
        op.drop_column(table, column)
    op.drop_table("latency_measurements")
