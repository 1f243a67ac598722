"""indexes for an office with years of history: every page, list and export by index

Revision ID: 0009_scale_indexes
Revises: 0008_sid_tombstones
Create Date: 2026-12-01 12:00:00

Measured on an office of 100,000 conversations and 2,000,000 messages, the console's
inbox, the admin logs, the export and the sweeper read whole tables. Each hot query
now has an index whose leading columns are its conditions and whose last ones its
order, so that it reads the rows it shows and stops (see tests/test_query_plans.py):

* the inbox's filters and counts (status; status and mode; the holder);
* keyset pages by id of an office's contacts, conversations, tickets and bot log;
* the bot log and the audit trail newest first by time, alone, by intent, by action
  or by person;
* a contact's messages and conversations, a conversation's tickets and events
  (export, erasure, the engine's open thread), and the columns that point at a
  message (the foreign keys' ON DELETE SET NULL when messages are deleted).

Some of these are also made by ``0003_retention_indexes`` (written at the same time
for the retention purge) under the same names and columns: whichever of the two runs
second finds them made and leaves them (``IF NOT EXISTS``). The bot log's time index
gains the id, as there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_scale_indexes"
down_revision = "0008_sid_tombstones"
branch_labels = None
depends_on = None

# name -> (table, columns, partial condition or None)
INDEXES: dict[str, tuple[str, list[str], str | None]] = {
    "ix_conversations_inbox_status": (
        "conversations",
        ["tenant_id", "status", "needs_attention", "last_message_at", "id"],
        None,
    ),
    "ix_conversations_inbox_mode": (
        "conversations",
        ["tenant_id", "status", "mode", "needs_attention", "last_message_at", "id"],
        None,
    ),
    "ix_conversations_inbox_holder": (
        "conversations",
        ["assigned_user_id", "status", "needs_attention", "last_message_at", "id"],
        None,
    ),
    "ix_conversations_tenant_id_id": ("conversations", ["tenant_id", "id"], None),
    "ix_contacts_tenant_id_id": ("contacts", ["tenant_id", "id"], None),
    "ix_tickets_tenant_id_id": ("tickets", ["tenant_id", "id", "created_at"], None),
    "ix_tickets_tenant_id_status": ("tickets", ["tenant_id", "status", "id"], None),
    "ix_bot_log_tenant_id_intent": ("bot_log", ["tenant_id", "intent", "at", "id"], None),
    "ix_bot_log_tenant_id_id": ("bot_log", ["tenant_id", "id", "at"], None),
    "ix_audit_events_tenant_id_at": ("audit_events", ["tenant_id", "at", "id"], None),
    "ix_audit_events_tenant_id_action": (
        "audit_events",
        ["tenant_id", "action", "at", "id"],
        None,
    ),
    "ix_audit_events_tenant_id_user_id": (
        "audit_events",
        ["tenant_id", "user_id", "at", "id"],
        None,
    ),
}

# The same names and columns as in 0003_retention_indexes.
SHARED: dict[str, tuple[str, list[str], str | None]] = {
    "ix_messages_contact_id": ("messages", ["contact_id"], "contact_id IS NOT NULL"),
    "ix_conversations_contact_id": ("conversations", ["contact_id"], None),
    "ix_bot_log_message_id": ("bot_log", ["message_id"], None),
    "ix_tickets_source_message_id": ("tickets", ["source_message_id"], None),
    "ix_tickets_conversation_id": ("tickets", ["conversation_id"], None),
    "ix_events_source_message_id": ("events", ["source_message_id"], None),
    "ix_events_conversation_id": ("events", ["conversation_id"], None),
}

BOT_LOG_TIME = "ix_bot_log_tenant_id"


def _create(name: str, table: str, columns: list[str], where: str | None) -> None:
    condition = None if where is None else sa.text(where)
    op.create_index(
        name,
        table,
        columns,
        unique=False,
        if_not_exists=True,
        sqlite_where=condition,
        postgresql_where=condition,
    )


def _columns(table: str, name: str) -> list[str] | None:
    for index in sa.inspect(op.get_bind()).get_indexes(table):
        if index["name"] == name:
            return [str(column) for column in index["column_names"]]
    return None


def upgrade() -> None:
    # The console pages the bot log by (time, id); the id breaks ties in the index.
    if _columns("bot_log", BOT_LOG_TIME) != ["tenant_id", "at", "id"]:
        op.drop_index(BOT_LOG_TIME, table_name="bot_log", if_exists=True)
        _create(BOT_LOG_TIME, "bot_log", ["tenant_id", "at", "id"], None)
    for name, (table, columns, where) in {**INDEXES, **SHARED}.items():
        _create(name, table, columns, where)


def downgrade() -> None:
    for name, (table, _, _where) in {**INDEXES, **SHARED}.items():
        op.drop_index(name, table_name=table, if_exists=True)
    op.drop_index(BOT_LOG_TIME, table_name="bot_log")
    op.create_index(BOT_LOG_TIME, "bot_log", ["tenant_id", "at"], unique=False)
