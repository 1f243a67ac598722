"""the consent ledger may be deleted with a terminated office, and only then

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:10:00

At the end of a contract the office's data is handed back and then deleted (art.
28(3)(g) GDPR), its consent ledger included. The database keeps refusing every
UPDATE, and every DELETE of a ledger row whose office is still active.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER consent_events_no_delete")
        op.execute(
            "CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events "
            "WHEN NOT EXISTS (SELECT 1 FROM tenants WHERE tenants.id = OLD.tenant_id "
            "AND tenants.terminated_at IS NOT NULL) "
            "BEGIN SELECT RAISE(ABORT, 'consent ledger is append-only'); END"
        )
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER consent_events_append_only ON consent_events")
        op.execute(
            "CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR TRUNCATE "
            "ON consent_events FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only()"
        )
        # Row-level: a statement trigger cannot see which office a deleted row belongs to.
        op.execute(
            "CREATE FUNCTION consent_events_delete_guard() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id "
            "AND terminated_at IS NOT NULL) THEN RETURN OLD; END IF; "
            "RAISE EXCEPTION 'consent ledger is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER consent_events_delete_guard BEFORE DELETE ON consent_events "
            "FOR EACH ROW EXECUTE FUNCTION consent_events_delete_guard()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER consent_events_no_delete")
        op.execute(
            "CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events "
            "BEGIN SELECT RAISE(ABORT, 'consent ledger is append-only'); END"
        )
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER consent_events_delete_guard ON consent_events")
        op.execute("DROP FUNCTION consent_events_delete_guard()")
        op.execute("DROP TRIGGER consent_events_append_only ON consent_events")
        op.execute(
            "CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON consent_events FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only()"
        )
