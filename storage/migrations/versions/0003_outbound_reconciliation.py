"""outbound messages caught mid-send: an index to find them

Revision ID: 0003_outbound_reconciliation
Revises: 0002
Create Date: 2026-11-24 10:00:00

Replies left ``sending`` by a worker that died mid-send are counted by /readyz; a
partial index keeps that cheap on a big table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_outbound_reconciliation"
down_revision = "0002"
branch_labels = None
depends_on = None

SENDING_OUT = "status = 'sending' AND direction = 'out'"


def upgrade() -> None:
    op.create_index(
        "ix_messages_sending_out",
        "messages",
        ["created_at"],
        unique=False,
        sqlite_where=sa.text(SENDING_OUT),
        postgresql_where=sa.text(SENDING_OUT),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_sending_out", table_name="messages")
