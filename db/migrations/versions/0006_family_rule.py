"""families.rule: the scaling rule a family was grown by (compound, width, depth or resolution); families stored
before it were all compound

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("families") as batch:
        batch.add_column(sa.Column("rule", sa.String(length=20), nullable=False, server_default="compound"))


def downgrade() -> None:
    with op.batch_alter_table("families") as batch:
        batch.drop_column("rule")
