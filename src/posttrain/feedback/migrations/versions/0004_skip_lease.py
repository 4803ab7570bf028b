"""The lease a skip gave back, so that a skip sent again (a retry after a timeout) is answered as the first was.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("skips") as batch:
        batch.add_column(sa.Column("lease_id", sa.Integer, nullable=True, index=True))


def downgrade() -> None:
    with op.batch_alter_table("skips") as batch:
        batch.drop_column("lease_id")
