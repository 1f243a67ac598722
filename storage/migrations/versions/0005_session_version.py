"""a session version per console account, for server-side sign-out

Revision ID: 0005_session_version
Revises: 0004_oncall_escalation
Create Date: 2026-11-24 10:00:00

A console session is valid only while it carries the account's current
``session_version``; logout, a password change and disabling the account bump it,
so a cookie copied before any of them is refused afterwards. Existing accounts
start at 0 (their sessions, signed in before this column, carry no version and
have to sign in again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_session_version"
down_revision = "0004_oncall_escalation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(
            sa.Column("session_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("session_version")
