"""the operator's inbox: read marks, canned responses, internal notes

Revision ID: 0015_inbox
Revises: 0014_scale_indexes
Create Date: 2026-12-01 12:00:00

- ``conversation_reads``: per operator and conversation, the last message they have
  read (the inbox's unread counts).
- ``canned_responses``: the office's ready answers, managed by the admin.
- ``internal_notes``: operators' notes on a conversation (encrypted, never sent).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_inbox"
down_revision = "0014_scale_indexes"
branch_labels = None
depends_on = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete=ondelete,
    )


def upgrade() -> None:
    op.create_table(
        "conversation_reads",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("last_read_message_id", sa.Integer(), nullable=False),
        sa.Column("read_at", _tz(), nullable=False),
        _fk("conversation_reads", "user_id", "users", "CASCADE"),
        _fk("conversation_reads", "conversation_id", "conversations", "CASCADE"),
        _fk("conversation_reads", "tenant_id", "tenants", "CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "conversation_id", name=op.f("pk_conversation_reads")),
    )
    op.create_table(
        "canned_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(80), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        _fk("canned_responses", "tenant_id", "tenants", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canned_responses")),
        sa.UniqueConstraint("tenant_id", "title", name=op.f("uq_canned_responses_tenant_id_title")),
    )
    op.create_table(
        "internal_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("author_user_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        _fk("internal_notes", "tenant_id", "tenants", "CASCADE"),
        _fk("internal_notes", "conversation_id", "conversations", "CASCADE"),
        _fk("internal_notes", "contact_id", "contacts", "CASCADE"),
        _fk("internal_notes", "author_user_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_internal_notes")),
    )
    op.create_index(
        "ix_internal_notes_conversation_id", "internal_notes", ["conversation_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_internal_notes_conversation_id", table_name="internal_notes")
    op.drop_table("internal_notes")
    op.drop_table("canned_responses")
    op.drop_table("conversation_reads")
