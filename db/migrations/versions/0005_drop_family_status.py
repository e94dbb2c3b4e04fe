"""families.status: dropped; every family is stored whole in one transaction, so it was always 'complete'

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("families") as batch:
        batch.drop_column("status")


def downgrade() -> None:
    with op.batch_alter_table("families") as batch:
        batch.add_column(sa.Column("status", sa.String(length=20), nullable=False, server_default="complete"))
