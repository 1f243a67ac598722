"""The reports' queries (bot/office/reports.py) on SQLite and PostgreSQL, and the
report page with its charts and CSV through the Flask client."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from helpers import csrf_token, login, make_contact, make_conversation, make_user
from sqlalchemy import update

from bot.office import reports
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.models import AuditEvent, BotLogEntry, Message, Tenant, Ticket

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
# Monday 2 November 2026 .. Sunday 15 November 2026, Italian time.
PERIOD = reports.Period(date(2026, 11, 2), date(2026, 11, 15))


def at(day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A moment in November 2026, given in UTC (Italy is UTC+1 then)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def log_entry(svc: Services, tenant: Tenant, moment: datetime, intent: str | None) -> None:
    with svc.db.session() as session:
        message = Message(
            tenant_id=tenant.id, direction="in", status="processed", created_at=moment
        )
        session.add(message)
        session.flush()
        session.add(
            BotLogEntry(
                tenant_id=tenant.id,
                message_id=message.id,
                at=moment,
                intent=intent,
                action="stored",
            )
        )


def message(svc: Services, conversation: Any, moment: datetime, **fields: Any) -> Message:
    fields.setdefault("direction", "in")
    fields.setdefault("status", "processed")
    with svc.db.session() as session:
        row = Message(
            tenant_id=conversation.tenant_id,
            conversation_id=conversation.id,
            contact_id=conversation.contact_id,
            created_at=moment,
            **fields,
        )
        session.add(row)
    return row


def ticket(svc: Services, tenant: Tenant, **fields: Any) -> Ticket:
    with svc.db.session() as session:
        row = Ticket(tenant_id=tenant.id, **fields)
        session.add(row)
    return row


def takeover(svc: Services, tenant: Tenant, conversation_id: int, moment: datetime) -> None:
    with svc.db.session() as session:
        event = record_audit(
            session,
            tenant.id,
            "conversation.takeover",
            actor="user:1",
            target_type="conversation",
            target_id=conversation_id,
        )
        session.execute(update(AuditEvent).where(AuditEvent.id == event.id).values(at=moment))


@BOTH
def test_messages_are_counted_per_week_and_intent_in_italian_time(svc, tenant):
    log_entry(svc, tenant, at(2), "guasto")
    log_entry(svc, tenant, at(8, 22, 30), "guasto")  # Sunday 23:30 in Italy: week one
    log_entry(svc, tenant, at(8, 23, 30), "guasto")  # Monday 00:30 in Italy: week two
    log_entry(svc, tenant, at(9), None)
    log_entry(svc, tenant, at(1, 22, 59), "guasto")  # Sunday 1 November: before the range
    with svc.db.read() as session:
        rows = reports.messages_by_week(session, tenant.id, PERIOD)
    assert rows == [
        reports.WeekIntent(date(2026, 11, 2), "guasto", 2),
        reports.WeekIntent(date(2026, 11, 9), None, 1),
        reports.WeekIntent(date(2026, 11, 9), "guasto", 1),
    ]


@BOTH
def test_first_response_and_resolution_are_credited_to_the_operator(svc, tenant):
    anna = make_user(svc, tenant, "anna@studio-rossi.it")
    luca = make_user(svc, tenant, "luca@studio-rossi.it")
    first = make_conversation(svc, tenant, created_at=at(3))
    message(svc, first, at(3, 9, 0))
    message(svc, first, at(3, 9, 1), direction="out", status="delivered", purpose="reply")
    message(svc, first, at(3, 9, 10))  # the resident's last message before the answer
    message(
        svc,
        first,
        at(3, 9, 40),
        direction="out",
        status="delivered",
        purpose="operator",
        sender_user_id=anna.id,
    )
    message(
        svc,
        first,
        at(3, 9, 50),
        direction="out",
        status="delivered",
        purpose="operator",
        sender_user_id=luca.id,
    )
    second = make_conversation(
        svc, tenant, make_contact(svc, tenant, "+393339990000"), created_at=at(4)
    )
    message(svc, second, at(4, 10, 0))
    message(
        svc,
        second,
        at(4, 10, 20),
        direction="out",
        status="delivered",
        purpose="operator",
        sender_user_id=luca.id,
    )
    ticket(
        svc,
        tenant,
        conversation_id=first.id,
        kind="guasto",
        status="done",
        created_at=at(3, 9, 0),
        updated_at=at(3, 15, 0),
    )
    ticket(
        svc,
        tenant,
        conversation_id=second.id,
        kind="guasto",
        status="open",
        created_at=at(4),
        updated_at=at(4),
    )
    with svc.db.read() as session:
        times = {t.email: t for t in reports.operator_times(session, tenant.id, PERIOD)}
    assert times["anna@studio-rossi.it"].answered == 1
    assert times["anna@studio-rossi.it"].median_first_response_s == 30 * 60
    assert times["anna@studio-rossi.it"].resolved == 1
    assert times["anna@studio-rossi.it"].median_resolution_s == 6 * 3600
    assert times["luca@studio-rossi.it"].answered == 1
    assert times["luca@studio-rossi.it"].median_first_response_s == 20 * 60
    assert times["luca@studio-rossi.it"].resolved == 0


@BOTH
def test_emergencies_are_grouped_by_place_with_the_time_to_the_first_takeover(svc, tenant):
    one = make_conversation(svc, tenant, created_at=at(5))
    two = make_conversation(
        svc, tenant, make_contact(svc, tenant, "+393339990000"), created_at=at(6)
    )
    place = [{"label": "ADDRESS", "text": "via Roma 5"}]
    ticket(
        svc,
        tenant,
        conversation_id=one.id,
        kind="emergency",
        intent="emergenza",
        entities=place,
        created_at=at(5, 8),
        updated_at=at(5, 8),
    )
    ticket(
        svc,
        tenant,
        conversation_id=two.id,
        kind="emergency",
        intent="emergenza",
        entities=[{"label": "ADDRESS", "text": "Via  Roma 5"}],
        created_at=at(6, 8),
        updated_at=at(6, 8),
    )
    ticket(
        svc,
        tenant,
        kind="emergency",
        intent="emergenza",
        entities=[],
        created_at=at(7, 8),
        updated_at=at(7, 8),
    )
    ticket(
        svc,
        tenant,
        conversation_id=one.id,
        kind="guasto",
        entities=place,
        created_at=at(5, 9),
        updated_at=at(5, 9),
    )
    takeover(svc, tenant, one.id, at(5, 7, 0))  # before the emergency: not its acknowledgement
    takeover(svc, tenant, one.id, at(5, 8, 4))
    takeover(svc, tenant, two.id, at(6, 8, 10))
    with svc.db.read() as session:
        found = reports.emergencies(session, tenant.id, PERIOD)
    assert [e.seconds_to_ack for e in found] == [240, 600, None]
    places = reports.emergencies_by_place(found)
    assert places[0] == reports.PlaceEmergencies("via Roma 5", 2, 2, 420)
    assert places[1].place == reports.NO_PLACE and places[1].acknowledged == 0


@BOTH
def test_the_share_of_conversations_the_bot_handled_alone(svc, tenant):
    anna = make_user(svc, tenant, "anna@studio-rossi.it")
    contacts = [make_contact(svc, tenant, f"+39333999000{n}") for n in range(4)]
    alone = make_conversation(svc, tenant, contacts[0], mode="bot", created_at=at(3))
    answered = make_conversation(svc, tenant, contacts[1], mode="bot", created_at=at(3))
    taken = make_conversation(svc, tenant, contacts[2], mode="bot", created_at=at(3))
    make_conversation(svc, tenant, contacts[3], mode="bot", created_at=at(20))  # outside
    message(svc, alone, at(3))
    message(
        svc,
        answered,
        at(3, 11),
        direction="out",
        status="sent",
        purpose="operator",
        sender_user_id=anna.id,
    )
    takeover(svc, tenant, taken.id, at(3, 12))
    with svc.db.read() as session:
        share = reports.bot_share(session, tenant.id, PERIOD)
    assert (share.conversations, share.bot_only) == (3, 1)


@BOTH
def test_open_tickets_are_counted_by_age(svc, tenant):
    now = at(20)
    for days, kind, status in (
        (0.5, "guasto", "open"),
        (2, "guasto", "in_progress"),
        (2, "preventivo", "open"),
        (40, "guasto", "open"),
        (40, "guasto", "done"),
    ):
        moment = now - timedelta(days=days)
        ticket(svc, tenant, kind=kind, status=status, created_at=moment, updated_at=moment)
    with svc.db.read() as session:
        ages = reports.open_tickets_by_age(session, tenant.id, now)
    assert ages == [
        reports.AgeCount("meno di 1 giorno", "guasto", 1),
        reports.AgeCount("1-3 giorni", "guasto", 1),
        reports.AgeCount("1-3 giorni", "preventivo", 1),
        reports.AgeCount("oltre 30 giorni", "guasto", 1),
    ]


def test_another_offices_rows_are_not_counted(svc, tenant):
    from helpers import make_tenant

    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    log_entry(svc, other, at(3), "guasto")
    ticket(svc, other, kind="emergency", created_at=at(3), updated_at=at(3))
    with svc.db.read() as session:
        assert reports.messages_by_week(session, tenant.id, PERIOD) == []
        assert reports.emergencies(session, tenant.id, PERIOD) == []
        assert reports.open_tickets_by_age(session, tenant.id, at(20)) == []


def test_the_report_page_draws_its_charts_and_exports_csv(client, svc, tenant):
    admin = make_user(svc, tenant, "dpo@studio-rossi.it", role="admin")
    log_entry(svc, tenant, at(3), "fattura_pagamento")
    assert login(client, admin.email).status_code == 302
    html = client.get("/console/admin/reports?dal=2026-11-01&al=2026-11-30").get_data(as_text=True)
    assert html.count('<img class="chart') == 5
    assert "data:image/svg+xml;base64," in html and "<script" not in html.split("</main>")[0]
    assert "fatture e pagamenti" in html
    csv = client.get("/console/admin/reports.csv?rapporto=settimane&dal=2026-11-01&al=2026-11-30")
    assert csv.mimetype == "text/csv"
    assert "2026-11-02;fatture e pagamenti;1" in csv.data.decode("utf-8-sig")
    assert csrf_token(client, "/console/")  # the page is a normal console page


def test_a_bad_or_too_long_range_falls_back_with_a_note(client, svc, tenant):
    admin = make_user(svc, tenant, "dpo@studio-rossi.it", role="admin")
    assert login(client, admin.email).status_code == 302
    bad = client.get("/console/admin/reports?dal=ieri").get_data(as_text=True)
    assert "ultime 12 settimane" in bad
    long = client.get("/console/admin/reports?dal=2010-01-01&al=2026-11-30").get_data(as_text=True)
    assert "limitato a due anni" in long
