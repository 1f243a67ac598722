"""indexes for batched retention and per-contact erasure; the file-deletion journal

Revision ID: 0013_retention_indexes
Revises: 0012_crm_webhooks
Create Date: 2026-11-24 09:00:00

The purge deletes an office's oldest rows a batch at a time, so it reads messages and
media by (tenant_id, created_at). Deleting a message, a conversation or a contact makes
the database look for the rows that point at it (ON DELETE CASCADE / SET NULL); without
an index on each pointing column that is a scan of the whole table per deleted row, on
SQLite and PostgreSQL alike. ``file_deletions`` journals media paths whose rows are gone
until their files are unlinked.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0013_retention_indexes"
down_revision = "0012_crm_webhooks"
branch_labels = None
depends_on = None

# name -> (table, columns, partial WHERE or None)
INDEXES: dict[str, tuple[str, list[str], str | None]] = {
    "ix_messages_tenant_id_created_at": ("messages", ["tenant_id", "created_at", "id"], None),
    "ix_messages_contact_id": ("messages", ["contact_id"], "contact_id IS NOT NULL"),
    "ix_media_items_tenant_id_created_at": (
        "media_items",
        ["tenant_id", "created_at", "id"],
        None,
    ),
    "ix_conversations_contact_id": ("conversations", ["contact_id"], None),
    "ix_bot_log_message_id": ("bot_log", ["message_id"], None),
    "ix_tickets_source_message_id": ("tickets", ["source_message_id"], None),
    "ix_tickets_conversation_id": ("tickets", ["conversation_id"], None),
    "ix_events_source_message_id": ("events", ["source_message_id"], None),
    "ix_events_conversation_id": ("events", ["conversation_id"], None),
}


def upgrade() -> None:
    # The bot log's time index gains the id, the tie-breaker retention walks by.
    op.drop_index("ix_bot_log_tenant_id", table_name="bot_log")
    op.create_index("ix_bot_log_tenant_id", "bot_log", ["tenant_id", "at", "id"], unique=False)
    for name, (table, columns, where) in INDEXES.items():
        condition = None if where is None else sa.text(where)
        op.create_index(
            name,
            table,
            columns,
            unique=False,
            sqlite_where=condition,
            postgresql_where=condition,
        )
    op.create_table(
        "file_deletions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_deletions")),
    )


def downgrade() -> None:
    op.drop_table("file_deletions")
    for name, (table, _columns, _where) in INDEXES.items():
        op.drop_index(name, table_name=table)
    op.drop_index("ix_bot_log_tenant_id", table_name="bot_log")
    op.create_index("ix_bot_log_tenant_id", "bot_log", ["tenant_id", "at"], unique=False)
