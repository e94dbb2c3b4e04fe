"""supernets (a weight-sharing supernet of a search space on one task, its training and its weights file) and
trials.supernet_accuracy / trials.supernet_reward (what a supernet scored a trial); trials stored before were
all scored by proxy training

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 19:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "supernets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("stem_stride", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("curve", sa.JSON(), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=True),
        sa.Column("weights_path", sa.Text(), nullable=True),
        sa.Column("weights_sha256", sa.String(64), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("supernet_accuracy", sa.Float(), nullable=True))
        batch.add_column(sa.Column("supernet_reward", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("supernet_reward")
        batch.drop_column("supernet_accuracy")
    op.drop_table("supernets")
