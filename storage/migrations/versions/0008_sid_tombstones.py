"""tombstones of processed deliveries: a replayed MessageSid creates nothing

Revision ID: 0008_sid_tombstones
Revises: 0007_ledger_minimised
Create Date: 2026-11-24 09:20:00

The webhook's unique (tenant, MessageSid) constraint makes a redelivery a no-op only
while the message row exists. Once an erasure or the retention purge has deleted it,
a captured, correctly signed delivery posted again would be stored as new, and
re-create the contact and send the welcome. A keyed hash of every processed SID is
kept beyond erasure and purge (it names no one and holds no SID), and the worker
discards a delivery whose SID it has already processed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_sid_tombstones"
down_revision = "0007_ledger_minimised"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sid_tombstones",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("sid_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_sid_tombstones_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "sid_hash", name=op.f("pk_sid_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("sid_tombstones")
