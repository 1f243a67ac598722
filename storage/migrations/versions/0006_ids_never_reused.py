"""ids of people's records are never given to another record (SQLite AUTOINCREMENT)

Revision ID: 0006_ids_never_reused
Revises: 0005_session_version
Create Date: 2026-11-24 09:00:00

Without AUTOINCREMENT, SQLite gives a new row the highest rowid plus one: after an
erasure deleted the highest contact, the next person to write got the erased one's
id, and with it, through the ledger rows that keep that id, the erased person's
consent history. The tables whose rows are deleted while the office lives (erasure,
retention) and whose ids are referred to from outside them (ledger, audit trail, the
office's CRM) are rebuilt with AUTOINCREMENT, keeping every row, index and foreign
key; the consent ledger itself is not rebuilt (its triggers refuse it, rightly).

Each rebuilt table's counter starts above the highest id it ever handed out that is
still on record: the ledger's contact ids and the audit trail's targets include ids
of records erased before this migration.

PostgreSQL's sequences never hand out an id twice: nothing to do there.
"""

from __future__ import annotations

from alembic import op

revision = "0006_ids_never_reused"
down_revision = "0005_session_version"
branch_labels = None
depends_on = None

TABLES = ("contacts", "conversations", "messages", "tickets", "events", "bot_log")


def _audit_targets(kind: str) -> str:
    return (
        "SELECT MAX(CAST(target_id AS INTEGER)) FROM audit_events "  # noqa: S608 - constants
        f"WHERE target_type = '{kind}' AND target_id <> '' AND target_id NOT GLOB '*[^0-9]*'"
    )


# Queries for the ids of a table that records outliving its rows still name.
_STILL_NAMED: dict[str, tuple[str, ...]] = {
    "contacts": ("SELECT MAX(contact_id) FROM consent_events", _audit_targets("contact")),
    "conversations": (_audit_targets("conversation"),),
    "tickets": (_audit_targets("ticket"),),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        _rebuild(table, autoincrement=True)
        _start_counter_above_known_ids(table)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        _rebuild(table, autoincrement=False)


def _rebuild(table: str, *, autoincrement: bool) -> None:
    # Reflected as it is (columns, partial indexes, named foreign keys with their
    # ON DELETE actions) and copied row by row; storage.migrate turns foreign-key
    # actions off meanwhile, or dropping the old table would cascade to its children.
    with op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def _start_counter_above_known_ids(table: str) -> None:
    bind = op.get_bind()
    queries = (f"SELECT MAX(id) FROM {table}", *_STILL_NAMED.get(table, ()))  # noqa: S608
    highest = max(int(bind.exec_driver_sql(query).scalar() or 0) for query in queries)
    if not highest:
        return
    # The copy of the rows already set the counter to the highest id copied.
    seen = bind.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
    current = seen.scalar()
    if current is None:
        bind.exec_driver_sql(
            "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, highest)
        )
    elif int(current) < highest:
        bind.exec_driver_sql("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (highest, table))
