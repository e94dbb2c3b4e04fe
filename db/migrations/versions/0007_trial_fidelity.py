"""trials.epochs, trials.partial and trials.first_rung_reward: the proxy epochs a trial was trained, whether it
stopped before the full proxy (successive halving), and its reward after the first rung; trials stored before
were all trained to the full proxy

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 19:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("epochs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("partial", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("first_rung_reward", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("first_rung_reward")
        batch.drop_column("partial")
        batch.drop_column("epochs")
