"""shard_external_relationships.seen_run_id (full-sync mark-and-sweep)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 23:40:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shard_external_relationships", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seen_run_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("shard_external_relationships", schema=None) as batch_op:
        batch_op.drop_column("seen_run_id")
