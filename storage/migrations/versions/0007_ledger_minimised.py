"""the consent ledger keeps the SHA-256 of the message it cites

Revision ID: 0007_ledger_minimised
Revises: 0006_ids_never_reused
Create Date: 2026-11-24 09:10:00

From now on the ledger's evidence is the keyword phrase, or the message with its
identifiers and health data redacted, plus the SHA-256 of the message as received:
consent stays provable without the ledger keeping what erasure must remove.

Rows written before keep the text they hold until their office is deleted: the
database refuses every UPDATE of the ledger, and this migration does not lift that
(a ledger that can be rewritten proves nothing). Their text is encrypted at rest and
never shown to a live contact other than its own person.

A column added with no default: no row is rewritten, no trigger fires (SQLite's
ALTER TABLE ADD COLUMN and PostgreSQL's alike), and the table is not rebuilt.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_ledger_minimised"
down_revision = "0006_ids_never_reused"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not in batch mode: a rebuild of the ledger would drop its triggers.
    op.add_column("consent_events", sa.Column("evidence_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+, PostgreSQL) rewrites no row through UPDATE.
    op.execute("ALTER TABLE consent_events DROP COLUMN evidence_sha256")
