"""Ending an office's contract: service stops at once, data exportable 60 days, then gone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    drain,
    export_lines,
    inbound_params,
    make_tenant,
    post_signed,
    records,
    send_inbound,
)
from sqlalchemy import func, select, text

from bot.office.lifecycle import EXPORT_WINDOW, terminate_tenant
from bot.office.tokens import create_token
from bot.privacy.retention import purge
from bot.privacy.rights import erase_contact
from storage.models import AuditEvent, Base, MediaItem, Message, Tenant, utcnow

OTHER_NUMBER = "+390298765432"


def rows_of(svc, tenant_id: int) -> dict[str, int]:
    """Rows per table that belong to the office, across every table with a tenant_id."""
    counts = {}
    with svc.db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if "tenant_id" in table.c:
                query = select(func.count()).where(table.c.tenant_id == tenant_id)
                counts[table.name] = int(connection.scalar(query) or 0)
    return counts


def consented_with_photo(client, svc, twilio, **kwargs) -> Path:
    send_inbound(client, "buongiorno", **kwargs)
    drain(svc)
    send_inbound(client, "accetto", **kwargs)
    drain(svc)
    url = twilio.add_media(b"\x89PNG crepa", "image/png")
    send_inbound(
        client, "la crepa", NumMedia="1", MediaUrl0=url, MediaContentType0="image/png", **kwargs
    )
    drain(svc)
    with svc.db.session() as session:
        return Path(session.scalars(select(MediaItem.path).order_by(MediaItem.id.desc())).first())


def terminated_days_ago(svc, tenant: Tenant, days: int) -> None:
    terminate_tenant(svc, tenant.id, utcnow() - timedelta(days=days), actor="test")


def test_a_terminated_office_number_is_no_longer_served(client, svc, tenant):
    terminate_tenant(svc, tenant.id, utcnow(), actor="test")

    response = post_signed(client, "/webhooks/twilio/messages", inbound_params("buongiorno"))

    assert response.status_code == 404
    assert rows_of(svc, tenant.id)["messages"] == 0


def test_termination_is_audited_with_its_deletion_date(svc, tenant):
    now = utcnow()

    delete_after = terminate_tenant(svc, tenant.id, now, actor="test")

    assert delete_after == now + EXPORT_WINDOW == now + timedelta(days=60)
    with svc.db.session() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event.action == "tenant.terminated"


def test_terminating_twice_keeps_the_first_deadline(svc, tenant):
    first = terminate_tenant(svc, tenant.id, utcnow() - timedelta(days=10), actor="test")

    assert terminate_tenant(svc, tenant.id, utcnow(), actor="test") == first


def test_within_the_window_the_whole_office_can_be_exported(client, svc, twilio, tenant):
    consented_with_photo(client, svc, twilio)
    terminated_days_ago(svc, tenant, 59)

    purge(svc, utcnow())
    lines = export_lines(svc, tenant)

    [contact] = records(lines, "contact")
    assert [m["body"] for m in contact["messages"] if m["direction"] == "in"] == [
        "buongiorno",
        "accetto",
        "la crepa",
    ]
    assert [e["event"] for e in contact["consent_events"]][-1] == "granted"
    assert "tenant.terminated" in [a["action"] for a in records(lines, "audit_event")]


def test_the_office_export_keeps_the_ledger_of_erased_contacts(client, svc, tenant):
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "accetto")
    drain(svc)
    erase_contact(svc, tenant, "+393331234567", actor="test")

    lines = export_lines(svc, tenant)

    assert records(lines, "contact") == []
    events = records(lines, "consent_event_of_erased_contact")
    assert [e["event"] for e in events] == ["notice_sent", "granted"]
    assert all(len(e["subject_ref"]) == 64 for e in events)


def test_a_terminated_office_api_token_reads_but_cannot_send(client, svc, tenant):
    with svc.db.session() as session:
        token = create_token(session, session.get(Tenant, tenant.id), "crm")
    headers = {"Authorization": f"Bearer {token}"}
    terminate_tenant(svc, tenant.id, utcnow(), actor="test")

    read = client.get("/api/v1/tickets", headers=headers)
    send = client.post(
        "/api/v1/messages", json={"to": "+393331234567", "body": "x"}, headers=headers
    )

    assert read.status_code == 200
    assert send.status_code == 403
    assert send.get_json()["error"] == "office_terminated"


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_after_the_window_the_purge_deletes_the_office_and_all_its_data(
    client, svc, twilio, tenant
):
    photo = consented_with_photo(client, svc, twilio)
    other = make_tenant(svc, slug="studio-bianchi", number=OTHER_NUMBER)
    consented_with_photo(client, svc, twilio, to=OTHER_NUMBER)
    other_rows = rows_of(svc, other.id)
    assert rows_of(svc, tenant.id)["consent_events"] == 2
    terminated_days_ago(svc, tenant, 61)

    reports = purge(svc, utcnow())

    assert set(rows_of(svc, tenant.id).values()) == {0}
    assert not photo.exists()
    with svc.db.session() as session:
        assert session.get(Tenant, tenant.id) is None
    assert {r.tenant: r.removed.get("office") for r in reports}[tenant.slug] == 1
    assert rows_of(svc, other.id)["consent_events"] == other_rows["consent_events"]
    assert rows_of(svc, other.id)["messages"] == other_rows["messages"]


def test_a_dry_run_counts_the_office_deletion_and_keeps_everything(client, svc, twilio, tenant):
    photo = consented_with_photo(client, svc, twilio)
    before = rows_of(svc, tenant.id)
    terminated_days_ago(svc, tenant, 61)

    reports = purge(svc, utcnow(), dry_run=True)

    [report] = [r for r in reports if r.tenant == tenant.slug]
    assert report.removed["messages"] == before["messages"] > 0
    assert rows_of(svc, tenant.id)["messages"] == before["messages"]
    assert photo.exists()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_ledger_of_an_active_office_still_cannot_be_deleted(client, svc, tenant):
    import sqlalchemy.exc

    send_inbound(client, "buongiorno")
    drain(svc)

    with pytest.raises(sqlalchemy.exc.DatabaseError), svc.db.engine.begin() as connection:
        connection.execute(text("DELETE FROM consent_events"))
    assert rows_of(svc, tenant.id)["consent_events"] == 1


def test_cli_terminate_prints_the_export_deadline(app, svc, tenant):
    result = app.test_cli_runner().invoke(
        args=["tenant", "terminate", "--tenant", tenant.slug, "--yes"]
    )

    assert result.exit_code == 0, result.output
    assert "exported until" in result.output
    with svc.db.session() as session:
        assert session.get(Tenant, tenant.id).terminated_at is not None


def test_a_message_stored_before_termination_gets_no_reply_after_it(client, svc, twilio, tenant):
    send_inbound(client, "buongiorno")
    terminate_tenant(svc, tenant.id, utcnow(), actor="test")

    drain(svc)

    assert twilio.messages == []
    with svc.db.session() as session:
        directions = session.scalars(select(Message.direction)).all()
        processed = session.scalar(select(Message.processed_at).where(Message.direction == "in"))
    assert directions == ["in"]  # the gate refused every reply: none recorded, none sent
    assert processed is not None  # handled once, not retried
