"""trials.zero_cost_score: the training-free score that prescreening (nas.search --prescreen) chose a trial by

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 18:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("zero_cost_score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("zero_cost_score")
