"""outbound messages caught mid-send: an index to find them, and what reconciling them found

Revision ID: 0009_outbound_reconciliation
Revises: 0008_sid_tombstones
Create Date: 2026-11-24 10:00:00

A worker that dies while handing a reply to Twilio leaves the row ``sending`` with no
SID. The sweeper looks for such rows (a partial index keeps that cheap on a big
table), searches Twilio's list of messages for them, counts its looks, and marks one
it never finds failed with a reason an operator can read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_outbound_reconciliation"
down_revision = "0008_sid_tombstones"
branch_labels = None
depends_on = None

SENDING_OUT = "status = 'sending' AND direction = 'out'"
UNCONFIRMED_OUT = "failure_reason IS NOT NULL"


def upgrade() -> None:
    op.add_column("messages", sa.Column("failure_reason", sa.String(length=32), nullable=True))
    op.add_column(
        "messages",
        sa.Column("reconcile_looks", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_messages_sending_out",
        "messages",
        ["created_at"],
        unique=False,
        sqlite_where=sa.text(SENDING_OUT),
        postgresql_where=sa.text(SENDING_OUT),
    )
    op.create_index(
        "ix_messages_failure_reason",
        "messages",
        ["tenant_id", "id"],
        unique=False,
        sqlite_where=sa.text(UNCONFIRMED_OUT),
        postgresql_where=sa.text(UNCONFIRMED_OUT),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_failure_reason", table_name="messages")
    op.drop_index("ix_messages_sending_out", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reconcile_looks")
        batch.drop_column("failure_reason")
