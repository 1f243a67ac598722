"""indexes for erasing a person across the office's world and the inbox

Revision ID: 0017_erasure_indexes
Revises: 0016_office_world
Create Date: 2026-12-01 13:00:00

Erasing a contact deletes or unlinks the rows that name them or their messages:
tickets filed for them or supplied by them, work orders, copies of building notices,
internal notes, read marks of their conversations, data-subject requests. Without an
index on each of those columns every erasure (and the purge of each expired contact)
scans those tables whole, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from alembic import op

revision = "0017_erasure_indexes"
down_revision = "0016_office_world"
branch_labels = None
depends_on = None

# name -> (table, columns)
INDEXES: dict[str, tuple[str, list[str]]] = {
    "ix_tickets_contact_id": ("tickets", ["contact_id"]),
    "ix_tickets_supplier_contact_id": ("tickets", ["supplier_contact_id"]),
    "ix_work_orders_supplier_contact_id": ("work_orders", ["supplier_contact_id"]),
    "ix_work_orders_message_id": ("work_orders", ["message_id"]),
    "ix_notice_deliveries_contact_id": ("notice_deliveries", ["contact_id"]),
    "ix_notice_deliveries_message_id": ("notice_deliveries", ["message_id"]),
    "ix_internal_notes_contact_id": ("internal_notes", ["contact_id"]),
    "ix_conversation_reads_conversation_id": ("conversation_reads", ["conversation_id"]),
    "ix_data_requests_contact_id": ("data_requests", ["contact_id"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, (table, _columns) in INDEXES.items():
        op.drop_index(name, table_name=table)
