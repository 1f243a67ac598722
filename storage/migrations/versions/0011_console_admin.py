"""administration in the console: full notice text, one-time password links, data requests

Revision ID: 0011_console_admin
Revises: 0010_emergency_cases
Create Date: 2026-11-25 09:00:00

- ``privacy_notices.full_text`` and ``full_sha256``: the full notice of each version,
  shown on ``/privacy/<slug>`` (older versions have none and show their short text).
- ``password_links``: one-time, expiring links to set a console password (invitations
  and resets), kept only as the SHA-256 of their token.
- ``data_requests``: the admin's queue of access and erasure requests, from chat (one
  per ledger event) or entered by hand, with their due date and outcome.
- indexes for the reports: conversations by office and opening time, audit events by
  office, action and target (when a conversation was first taken over).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_console_admin"
down_revision = "0010_emergency_cases"
branch_labels = None
depends_on = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("privacy_notices", sa.Column("full_text", sa.Text(), nullable=True))
    op.add_column("privacy_notices", sa.Column("full_sha256", sa.String(64), nullable=True))
    op.create_table(
        "password_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("used_at", _tz(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_password_links_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_links_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["users.id"],
            name=op.f("fk_password_links_created_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_links_token_hash")),
    )
    op.create_index(op.f("ix_password_links_tenant_id"), "password_links", ["tenant_id", "user_id"])
    op.create_table(
        "data_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("masked_phone", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ledger_event_id", sa.Integer(), nullable=True),
        sa.Column("received_via", sa.String(200), nullable=True),
        sa.Column("received_at", _tz(), nullable=False),
        sa.Column("due_at", _tz(), nullable=False),
        sa.Column("export_path", sa.String(500), nullable=True),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("closed_at", _tz(), nullable=True),
        sa.Column("closed_by_user_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_data_requests_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_data_requests_contact_id_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["users.id"],
            name=op.f("fk_data_requests_created_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["closed_by_user_id"],
            ["users.id"],
            name=op.f("fk_data_requests_closed_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_requests")),
        sa.UniqueConstraint(
            "tenant_id", "ledger_event_id", name=op.f("uq_data_requests_tenant_id_ledger_event_id")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_data_requests_tenant_id"), "data_requests", ["tenant_id", "status", "due_at"]
    )
    # The reports read date ranges of conversations and the takeovers in the audit trail.
    op.create_index(
        "ix_conversations_tenant_id_created_at", "conversations", ["tenant_id", "created_at"]
    )
    op.create_index(
        "ix_audit_events_tenant_id_action", "audit_events", ["tenant_id", "action", "target_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_tenant_id_action", table_name="audit_events")
    op.drop_index("ix_conversations_tenant_id_created_at", table_name="conversations")
    op.drop_index(op.f("ix_data_requests_tenant_id"), table_name="data_requests")
    op.drop_table("data_requests")
    op.drop_index(op.f("ix_password_links_tenant_id"), table_name="password_links")
    op.drop_table("password_links")
    with op.batch_alter_table("privacy_notices") as batch:
        batch.drop_column("full_sha256")
        batch.drop_column("full_text")
