"""emergencies as cases: a ticket timeline, acknowledgement, the handoff reminder

Revision ID: 0010_emergency_cases
Revises: 0009_outbound_reconciliation
Create Date: 2026-11-24 10:00:00

An emergency opens a ticket that records its hazard and stays unacknowledged until
an operator takes charge; every ticket gets a timeline (``ticket_events``). A
conversation remembers when the resident was told that an operator will answer,
and whether they were reminded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0010_emergency_cases"
down_revision = "0009_outbound_reconciliation"
branch_labels = None
depends_on = None

_UNACKNOWLEDGED = "kind = 'emergency' AND acknowledged_at IS NULL"
_KEEP_IDS = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hazard", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("acknowledged_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_tickets_unacknowledged",
            ["created_at"],
            unique=False,
            sqlite_where=sa.text(_UNACKNOWLEDGED),
            postgresql_where=sa.text(_UNACKNOWLEDGED),
        )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("handoff_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "handoff_reminded_at", storage.models.UTCDateTime(timezone=True), nullable=True
            )
        )
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ticket_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_ticket_events_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("ticket_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ticket_events_ticket_id"), ["ticket_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ticket_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_events_ticket_id"))
    op.drop_table("ticket_events")
    # Dropping a column rebuilds the table on SQLite: it keeps its AUTOINCREMENT
    # (0006_ids_never_reused).
    with op.batch_alter_table("conversations", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("handoff_reminded_at")
        batch_op.drop_column("handoff_at")
    with op.batch_alter_table("tickets", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_index("ix_tickets_unacknowledged")
        batch_op.drop_column("acknowledged_at")
        batch_op.drop_column("hazard")
