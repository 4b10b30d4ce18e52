"""runtime_sync_slots (per-tenant concurrent-sync slots)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 00:05:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runtime_sync_slots",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("integration_id", sa.String(length=36), nullable=True),
        sa.Column("lease_until", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "slot", name=op.f("pk_runtime_sync_slots")),
    )
    with op.batch_alter_table("runtime_sync_slots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runtime_sync_slots_holder"), ["holder"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runtime_sync_slots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runtime_sync_slots_holder"))
    op.drop_table("runtime_sync_slots")
