"""indexes for an office with years of history: every page, list and export by index

Revision ID: 0014_scale_indexes
Revises: 0013_retention_indexes
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

The indexes on the columns that point at a message, a conversation or a contact, and
the bot log's (office, time, id), come before this, with the retention purge's
(``0013_retention_indexes``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_scale_indexes"
down_revision = "0013_retention_indexes"
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
    "ix_audit_events_tenant_id_action_at": (
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


def upgrade() -> None:
    for name, (table, columns, where) in INDEXES.items():
        _create(name, table, columns, where)


def downgrade() -> None:
    for name, (table, _, _where) in INDEXES.items():
        op.drop_index(name, table_name=table)
