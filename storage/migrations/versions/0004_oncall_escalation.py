"""the on-call rota and the calls of an emergency's escalation

Revision ID: 0004_oncall_escalation
Revises: 0003_push_subscriptions
Create Date: 2026-12-01 09:05:00

``oncall_people``: whom the office calls, in order. ``escalation_calls``: each voice
call placed for an unacknowledged emergency; the unique (conversation, sequence)
pair is the claim that stops two workers placing the same call.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0004_oncall_escalation"
down_revision = "0003_push_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oncall_people",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_oncall_people_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_people")),
        sa.UniqueConstraint("tenant_id", "phone", name=op.f("uq_oncall_people_tenant_id_phone")),
    )
    with op.batch_alter_table("oncall_people", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oncall_people_tenant_id"), ["tenant_id", "position"], unique=False
        )
    op.create_table(
        "escalation_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("oncall_id", sa.Integer(), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=True),
        sa.Column("hazard", sa.String(length=64), nullable=True),
        sa.Column("place", sa.String(length=200), nullable=True),
        sa.Column("placed_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("acknowledged_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_escalation_calls_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["oncall_id"],
            ["oncall_people.id"],
            name=op.f("fk_escalation_calls_oncall_id_oncall_people"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_escalation_calls_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_calls")),
        sa.UniqueConstraint("call_sid", name=op.f("uq_escalation_calls_call_sid")),
        sa.UniqueConstraint(
            "conversation_id", "sequence", name=op.f("uq_escalation_calls_conversation_id_sequence")
        ),
    )


def downgrade() -> None:
    op.drop_table("escalation_calls")
    with op.batch_alter_table("oncall_people", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oncall_people_tenant_id"))
    op.drop_table("oncall_people")
