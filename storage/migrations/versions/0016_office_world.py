"""the office's own world: buildings, units, people's places, work items, work orders, notices

Revision ID: 0016_office_world
Revises: 0015_inbox
Create Date: 2026-12-01 12:00:00

- ``buildings`` (by the office's code), ``units`` (scala, interno) and
  ``building_links`` (a contact's role in a building: proprietario, inquilino, fornitore);
  contacts gain ``name``, ``trade`` and the notice categories they opted into.
- tickets become work items: who reported it, building and unit, description
  (encrypted), priority, assignee, supplier, due date; ``ticket_notes`` for internal notes.
- ``work_orders`` (ordini di lavoro to suppliers); a timeline row may name its work order.
- ``building_notices`` and their ``notice_deliveries``.
- a conversation remembers the fault whose building the bot asked for.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0016_office_world"
down_revision = "0015_inbox"
branch_labels = None
depends_on = None

_KEEP_IDS = {"sqlite_autoincrement": True}
# The tickets' new links (SET NULL): the column and the table it names.
_TICKET_LINKS = (
    ("contact_id", "contacts"),
    ("building_id", "buildings"),
    ("unit_id", "units"),
    ("assignee_user_id", "users"),
    ("supplier_contact_id", "contacts"),
)


def _tz() -> storage.models.UTCDateTime:
    return storage.models.UTCDateTime(timezone=True)


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants", ondelete="CASCADE"
    )


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "buildings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("address", sa.String(300), nullable=False),
        sa.Column("emergency_numbers", sa.JSON(), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        _tenant_fk("buildings"),
        sa.PrimaryKeyConstraint("id", name="pk_buildings"),
        sa.UniqueConstraint("tenant_id", "code", name="uq_buildings_tenant_id_code"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=False),
        sa.Column("scala", sa.String(16), nullable=False),
        sa.Column("interno", sa.String(16), nullable=False),
        _tenant_fk("units"),
        _fk("units", "building_id", "buildings", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
        sa.UniqueConstraint(
            "building_id", "scala", "interno", name="uq_units_building_id_scala_interno"
        ),
    )
    op.create_table(
        "building_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        _tenant_fk("building_links"),
        _fk("building_links", "contact_id", "contacts", "CASCADE"),
        _fk("building_links", "building_id", "buildings", "CASCADE"),
        _fk("building_links", "unit_id", "units", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_building_links"),
        sa.UniqueConstraint(
            "contact_id", "building_id", name="uq_building_links_contact_id_building_id"
        ),
    )
    op.create_index("ix_building_links_tenant_id", "building_links", ["tenant_id", "building_id"])
    op.create_table(
        "ticket_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        _tenant_fk("ticket_notes"),
        _fk("ticket_notes", "ticket_id", "tickets", "CASCADE"),
        _fk("ticket_notes", "user_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_notes"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ticket_notes_ticket_id", "ticket_notes", ["ticket_id", "id"])
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("supplier_contact_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("proposed_at", _tz(), nullable=True),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        _tenant_fk("work_orders"),
        _fk("work_orders", "ticket_id", "tickets", "CASCADE"),
        _fk("work_orders", "supplier_contact_id", "contacts", "SET NULL"),
        _fk("work_orders", "message_id", "messages", "SET NULL"),
        _fk("work_orders", "created_by_user_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_work_orders"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_work_orders_tenant_id", "work_orders", ["tenant_id", "supplier_contact_id", "status"]
    )
    op.create_index("ix_work_orders_ticket_id", "work_orders", ["ticket_id"])
    op.create_table(
        "building_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=True),
        sa.Column("scala", sa.String(16), nullable=True),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("content_sid", sa.String(64), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        _tenant_fk("building_notices"),
        _fk("building_notices", "building_id", "buildings", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_building_notices"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_building_notices_tenant_id", "building_notices", ["tenant_id", "id"])
    op.create_table(
        "notice_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("refusal", sa.String(32), nullable=True),
        _tenant_fk("notice_deliveries"),
        _fk("notice_deliveries", "notice_id", "building_notices", "CASCADE"),
        _fk("notice_deliveries", "contact_id", "contacts", "SET NULL"),
        _fk("notice_deliveries", "message_id", "messages", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_notice_deliveries"),
        sa.UniqueConstraint(
            "notice_id", "contact_id", name="uq_notice_deliveries_notice_id_contact_id"
        ),
    )
    with op.batch_alter_table("contacts", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("trade", sa.String(64), nullable=True))
        batch_op.add_column(
            sa.Column("notice_categories", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("conversations", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("pending_ticket_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("building_choices", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("tickets", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("contact_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("building_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("unit_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("description", sa.LargeBinary(), nullable=True))
        batch_op.add_column(
            sa.Column("priority", sa.String(8), nullable=False, server_default="normal")
        )
        batch_op.add_column(sa.Column("assignee_user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("supplier_contact_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("due_at", _tz(), nullable=True))
        for column, target in _TICKET_LINKS:
            batch_op.create_foreign_key(
                f"fk_tickets_{column}_{target}", target, [column], ["id"], ondelete="SET NULL"
            )
    with op.batch_alter_table("ticket_events", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("work_order_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_ticket_events_work_order_id_work_orders",
            "work_orders",
            ["work_order_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("ticket_events", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_constraint("fk_ticket_events_work_order_id_work_orders", type_="foreignkey")
        batch_op.drop_column("work_order_id")
    with op.batch_alter_table("tickets", table_kwargs=_KEEP_IDS) as batch_op:
        for column, target in _TICKET_LINKS:
            batch_op.drop_constraint(f"fk_tickets_{column}_{target}", type_="foreignkey")
        for column in (
            "due_at",
            "supplier_contact_id",
            "assignee_user_id",
            "priority",
            "description",
            "unit_id",
            "building_id",
            "contact_id",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("conversations", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("building_choices")
        batch_op.drop_column("pending_ticket_id")
    with op.batch_alter_table("contacts", table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("notice_categories")
        batch_op.drop_column("trade")
        batch_op.drop_column("name")
    op.drop_table("notice_deliveries")
    op.drop_index("ix_building_notices_tenant_id", table_name="building_notices")
    op.drop_table("building_notices")
    op.drop_index("ix_work_orders_ticket_id", table_name="work_orders")
    op.drop_index("ix_work_orders_tenant_id", table_name="work_orders")
    op.drop_table("work_orders")
    op.drop_index("ix_ticket_notes_ticket_id", table_name="ticket_notes")
    op.drop_table("ticket_notes")
    op.drop_index("ix_building_links_tenant_id", table_name="building_links")
    op.drop_table("building_links")
    op.drop_table("units")
    op.drop_table("buildings")
