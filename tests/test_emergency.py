"""Emergencies: safety first, the vital-interests reply, the case and its acknowledgement,
office hours and the reminder after a handoff, the priority lane.

Through the real webhook, worker, gate and fake Twilio where the behaviour is the
product's; the rules and the office hours as plain functions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from helpers import (
    PUBLIC_BASE_URL,
    RESIDENT,
    actor_for,
    add_message,
    drain,
    make_contact,
    make_conversation,
    make_tenant,
    make_user,
    post_form,
    reload,
    send_inbound,
)
from sqlalchemy import select

from bot.conversation import handoff
from bot.conversation.emergency import (
    acknowledge_emergency,
    unacknowledged_emergencies,
)
from bot.conversation.escalation import escalate_unacknowledged
from bot.conversation.replies import TEXTS
from bot.exceptions import InvalidSetting, NotFound, Refused
from bot.office.hours import OFFICE_ZONE, OfficeHours, closed_now
from bot.office.oncall import add_oncall
from bot.office.settings import parse_assignment, update_settings
from bot.office.tokens import create_token
from bot.outbound.gate import Outgoing, check_outbound, evaluate
from bot.runtime.queueing import Triaged
from bot.runtime.worker import lane_triage
from bot.services import Services
from notify.operators import tenant_channel
from storage.models import (
    AuditEvent,
    BotLogEntry,
    ConsentEvent,
    Contact,
    Conversation,
    Message,
    Tenant,
    Ticket,
    TicketEvent,
    utcnow,
)

NEIGHBOUR = "+393339876543"
ON_CALL = "+393331112222"
GAS = "C'è una forte puzza di gas nelle scale di via Roma 12, venite subito"
FIRE = "Aiuto c'è un incendio in cantina"


# -- moves and readings -----------------------------------------------------------------


def say(client: FlaskClient, svc: Services, text: str, sender: str = RESIDENT) -> dict[str, str]:
    params = send_inbound(client, text, sender=sender)
    drain(svc)
    return params


@pytest.fixture
def consented(client, svc, tenant, twilio):
    say(client, svc, "buongiorno")
    say(client, svc, "accetto")
    twilio.reset()
    return client


def the_conversation(svc: Services) -> Conversation:
    with svc.db.read() as session:
        found = session.scalar(select(Conversation).order_by(Conversation.id.desc()))
        assert found is not None
        return found


def the_ticket(svc: Services) -> Ticket:
    with svc.db.read() as session:
        found = session.scalar(select(Ticket).order_by(Ticket.id.desc()))
        assert found is not None
        return found


def timeline(svc: Services, ticket: Ticket) -> list[TicketEvent]:
    with svc.db.read() as session:
        return list(
            session.scalars(
                select(TicketEvent)
                .where(TicketEvent.ticket_id == ticket.id)
                .order_by(TicketEvent.id)
            )
        )


def ledger(svc: Services) -> list[ConsentEvent]:
    with svc.db.read() as session:
        return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def last_log(svc: Services) -> BotLogEntry:
    with svc.db.read() as session:
        found = session.scalar(
            select(BotLogEntry)
            .where(BotLogEntry.message_id.is_not(None))
            .order_by(BotLogEntry.id.desc())
        )
        assert found is not None
        return found


def bearer(svc: Services, tenant: Tenant) -> dict[str, str]:
    with svc.db.session() as session:
        return {"Authorization": f"Bearer {create_token(session, tenant, 'crm')}"}


def audit_rows(svc: Services, action: str) -> list[AuditEvent]:
    with svc.db.read() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def stream_cursor(svc: Services, tenant: Tenant) -> str:
    return svc.notifier.read((tenant_channel(tenant.slug),), None).cursor


def events_since(svc: Services, tenant: Tenant, cursor: str) -> list[str]:
    return [e["event"] for e in svc.notifier.read((tenant_channel(tenant.slug),), cursor).events]


# -- the gate's one exception -----------------------------------------------------------


def test_the_gate_lets_a_withdrawn_contact_have_only_the_safety_answer_to_their_emergency():
    now = utcnow()
    common = {"consent": "withdrawn", "legal_basis": "consent", "last_inbound_at": now, "now": now}
    assert evaluate(
        purpose="safety", is_template=False, answers_unanswered_emergency=True, **common
    ).allowed
    for purpose, emergency in [("safety", False), ("reply", True), ("operator", True)]:
        decision = evaluate(
            purpose=purpose, is_template=False, answers_unanswered_emergency=emergency, **common
        )
        assert decision.reason == "opted_out"
    assert not evaluate(
        purpose="safety", is_template=True, answers_unanswered_emergency=True, **common
    ).allowed


# -- safety first, through the worker ---------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_withdrawn_contact_reporting_a_fire_gets_one_safety_reply_and_nothing_more(
    client, svc, tenant, twilio, signed_in
):
    say(client, svc, "buongiorno")
    say(client, svc, "accetto")
    say(client, svc, "STOP")
    twilio.reset()

    report = say(client, svc, FIRE)

    assert [m["Body"] for m in twilio.messages] == [TEXTS["emergency_fire"]]
    thread = the_conversation(svc)
    assert (thread.priority, thread.needs_attention, thread.mode) == ("urgent", True, "human")
    ticket = the_ticket(svc)
    assert (ticket.kind, ticket.intent, ticket.hazard) == ("emergency", "emergenza", "fire")
    # The ledger proves why a withdrawn person was written to, without keeping the report.
    vital = ledger(svc)[-1]
    assert (vital.event, vital.evidence_message_sid) == (
        "vital_interests_reply",
        report["MessageSid"],
    )
    assert svc.cipher.decrypt(vital.evidence_text) == "emergenza: fire"
    entry = last_log(svc)
    assert entry.detail["legal_basis"] == "vital_interests"
    assert entry.detail["replies"] == [["emergency_fire", "safety"]]
    with svc.db.read() as session:
        contact = session.scalar(select(Contact))
        assert contact is not None and contact.consent == "withdrawn"

    # Nothing else: not a second report's worth of the same, not the bot, not a reminder.
    say(client, svc, "ci siete? il fumo aumenta")
    assert handoff.send_handoff_reminders(svc, utcnow() + timedelta(hours=1)) == 0
    drain(svc)
    page = f"/console/conversations/{thread.id}"
    post_form(signed_in, f"{page}/takeover", page=page)
    refused = post_form(
        signed_in, f"{page}/reply", {"body": "Arriviamo", "form_key": "k" * 16}, page=page
    )
    drain(svc)
    assert len(twilio.messages) == 1
    assert f"Non è possibile scrivere: chiamalo al {RESIDENT}" in refused.get_data(as_text=True)


def test_a_second_safety_reply_to_the_same_emergency_is_refused_by_the_gate(
    client, svc, tenant, twilio
):
    say(client, svc, "buongiorno")
    say(client, svc, "accetto")
    say(client, svc, "STOP")
    say(client, svc, FIRE)
    with svc.db.read() as session:
        contact = session.scalar(select(Contact))
        report = session.scalar(
            select(Message.id).where(Message.direction == "in").order_by(Message.id.desc())
        )
    assert contact is not None
    again = check_outbound(
        svc, tenant, contact, Outgoing(text="altro consiglio", purpose="safety", answers=report)
    )
    assert again.reason == "opted_out"


def test_a_strangers_flood_report_gets_the_safety_advice_before_the_welcome(
    client, svc, tenant, twilio
):
    say(client, svc, "Aiuto, la cantina è allagata e l'acqua sale")

    bodies = [m["Body"] for m in twilio.messages]
    assert bodies[0] == TEXTS["emergency_flood"]
    assert "ACCETTO" in bodies[1] and len(bodies) == 2
    assert [e.event for e in ledger(svc)] == ["vital_interests_reply", "notice_sent"]
    assert the_ticket(svc).kind == "emergency"


# -- the case: ticket, timeline, acknowledgement ----------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_an_emergency_opens_a_ticket_with_its_hazard_place_and_timeline(
    consented, svc, tenant, twilio
):
    say(consented, svc, GAS)

    ticket = the_ticket(svc)
    assert (ticket.kind, ticket.intent, ticket.status, ticket.hazard) == (
        "emergency",
        "emergenza",
        "open",
        "gas_smell",
    )
    assert {"label": "ADDRESS", "text": "via Roma 12"}.items() <= ticket.entities[0].items()
    assert [e.kind for e in timeline(svc, ticket)] == ["opened", "notified"]
    assert "conversation.emergency" in timeline(svc, ticket)[1].detail["events"]
    with svc.db.read() as session:
        [waiting] = unacknowledged_emergencies(session, utcnow())
    assert (waiting.ticket_id, waiting.tenant_slug, waiting.hazard) == (
        ticket.id,
        tenant.slug,
        "gas_smell",
    )
    assert (waiting.place, waiting.hazard_label) == ({"street": "via Roma 12"}, "odore di gas")
    assert waiting.conversation_id == ticket.conversation_id and waiting.waiting_seconds >= 0
    listed = consented.get("/api/v1/tickets", headers=bearer(svc, tenant)).get_json()["tickets"]
    assert [(t["kind"], t["intent"]) for t in listed] == [("emergency", "emergenza")]


def test_acknowledge_emergency_is_idempotent_and_scoped_to_the_office(consented, svc, tenant):
    say(consented, svc, GAS)
    thread = the_conversation(svc)
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")

    with pytest.raises(NotFound):
        acknowledge_emergency(svc, other.id, thread.id, actor="system", user_id=None, via="voice")
    first = acknowledge_emergency(
        svc, tenant.id, thread.id, actor="oncall", user_id=None, via="voice"
    )
    again = acknowledge_emergency(
        svc, tenant.id, thread.id, actor="oncall", user_id=None, via="voice"
    )

    assert (first, again) == (True, False)
    with svc.db.read() as session:
        assert unacknowledged_emergencies(session, utcnow()) == []
    acknowledged = timeline(svc, the_ticket(svc))[-1]
    assert (acknowledged.kind, acknowledged.actor, acknowledged.detail["via"]) == (
        "acknowledged",
        "oncall",
        "voice",
    )
    assert len(audit_rows(svc, "emergency.acknowledge")) == 1
    stored = reload(svc, thread)
    assert (stored.priority, stored.needs_attention) == ("urgent", False)


def test_taking_over_in_the_console_acknowledges_the_emergency(consented, svc, tenant, signed_in):
    say(consented, svc, GAS)
    thread = the_conversation(svc)
    page = f"/console/conversations/{thread.id}"
    assert 'id="acknowledge"' in signed_in.get(page).get_data(as_text=True)

    answer = post_form(signed_in, f"{page}/takeover", page=page).get_data(as_text=True)

    assert "e l&#39;emergenza" in answer or "e l'emergenza" in answer
    step = timeline(svc, the_ticket(svc))[-1]
    assert (step.kind, step.detail["via"]) == ("acknowledged", "takeover")
    assert step.actor.startswith("user:")
    assert 'id="acknowledge"' not in signed_in.get(page).get_data(as_text=True)
    assert [a.detail["via"] for a in audit_rows(svc, "emergency.acknowledge")] == ["takeover"]


def test_the_presa_in_carico_button_acknowledges_without_taking_over(
    consented, svc, tenant, signed_in, operator
):
    say(consented, svc, GAS)
    thread = the_conversation(svc)
    cursor = stream_cursor(svc, tenant)

    inbox = signed_in.get("/console/").get_data(as_text=True)
    assert "Presa in carico" in inbox
    answer = post_form(
        signed_in, f"/console/conversations/{thread.id}/acknowledge", {"from": "inbox"}
    )

    assert "Emergenza presa in carico" in answer.get_data(as_text=True)
    stored = reload(svc, thread)
    assert (stored.mode, stored.assigned_user_id) == ("human", None)
    assert (stored.priority, stored.needs_attention) == ("urgent", False)
    step = timeline(svc, the_ticket(svc))[-1]
    assert (step.kind, step.detail["via"], step.detail["user_id"]) == (
        "acknowledged",
        "console",
        operator.id,
    )
    assert "conversation.updated" in events_since(svc, tenant, cursor)
    assert "Presa in carico</button>" not in signed_in.get("/console/").get_data(as_text=True)


def test_the_api_acknowledges_with_200_json_audited_and_404_for_another_office(
    consented, svc, tenant
):
    say(consented, svc, GAS)
    thread = the_conversation(svc)
    headers = bearer(svc, tenant)
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    foreign = make_conversation(svc, other, make_contact(svc, other, NEIGHBOUR))

    answer = consented.post(f"/api/v1/conversations/{thread.id}/acknowledge", headers=headers)
    again = consented.post(f"/api/v1/conversations/{thread.id}/acknowledge", headers=headers)
    missing = consented.post(f"/api/v1/conversations/{foreign.id}/acknowledge", headers=headers)

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["acknowledged"] is True and body["conversation_id"] == thread.id
    assert (body["priority"], body["needs_attention"]) == ("urgent", False)
    assert body["emergencies"][0]["hazard"] == "gas_smell"
    assert body["emergencies"][0]["acknowledged_at"]
    assert (again.status_code, again.get_json()["acknowledged"]) == (200, False)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    [audited] = audit_rows(svc, "emergency.acknowledge")
    assert (audited.actor, audited.detail["via"]) == ("api", "api")


# -- escalation to the on-call people ---------------------------------------------------


@pytest.fixture
def on_call(svc: Services, tenant: Tenant) -> str:
    add_oncall(svc, tenant.id, "Mario", ON_CALL, actor="test")
    update_settings(svc, tenant.id, {"emergency.ack_seconds": 10}, actor="test")
    return ON_CALL


def test_nobody_acknowledging_calls_the_on_call_person_whose_1_acknowledges_the_case(
    consented, svc, tenant, twilio, on_call
):
    say(consented, svc, GAS)
    assert escalate_unacknowledged(svc, utcnow() + timedelta(seconds=5)) == []

    [placed] = escalate_unacknowledged(svc, utcnow() + timedelta(seconds=11))
    [call] = twilio.wait_for_calls(1)
    assert call["To"] == on_call and "odore di gas" in " ".join(twilio.said(call["sid"]))
    press = twilio.press(call["sid"], "1", public_base_url=PUBLIC_BASE_URL)
    answer = consented.post(press.path, data=press.params, headers=press.headers)

    assert answer.status_code == 200
    ticket = the_ticket(svc)
    assert ticket.acknowledged_at is not None
    step = timeline(svc, ticket)[-1]
    assert (step.kind, step.detail["via"], step.actor) == (
        "acknowledged",
        "voice",
        f"oncall:{placed.oncall_id}",
    )
    assert reload(svc, the_conversation(svc)).needs_attention is False
    assert escalate_unacknowledged(svc, utcnow() + timedelta(minutes=10)) == []
    assert len(twilio.calls) == 1


def test_an_emergency_acknowledged_in_the_office_calls_nobody(
    consented, svc, tenant, twilio, on_call
):
    say(consented, svc, GAS)
    acknowledge_emergency(
        svc, tenant.id, the_conversation(svc).id, actor="api", user_id=None, via="api"
    )

    assert escalate_unacknowledged(svc, utcnow() + timedelta(minutes=10)) == []
    assert twilio.calls == []


def test_two_reports_on_one_conversation_are_one_escalation(
    consented, svc, tenant, twilio, on_call
):
    say(consented, svc, GAS)
    say(consented, svc, FIRE)

    assert len(escalate_unacknowledged(svc, utcnow() + timedelta(seconds=11))) == 1


# -- release and close ------------------------------------------------------------------


def held_emergency(client, svc, operator) -> Conversation:
    """An operator holds the conversation when the resident reports an emergency."""
    say(client, svc, "vorrei parlare con una persona")
    thread = the_conversation(svc)
    with svc.db.session() as session:
        assert handoff.takeover(session, actor_for(operator), thread.id, utcnow()).won
    say(client, svc, GAS)
    return reload(svc, thread)


def test_an_emergency_in_human_mode_raises_the_alert_and_the_bot_stays_silent(
    consented, svc, tenant, twilio, operator
):
    say(consented, svc, "vorrei parlare con una persona")
    thread = the_conversation(svc)
    with svc.db.session() as session:
        handoff.takeover(session, actor_for(operator), thread.id, utcnow())
    twilio.reset()
    cursor = stream_cursor(svc, tenant)

    say(consented, svc, GAS)

    assert twilio.messages == []
    assert {"conversation.needs_attention", "conversation.emergency"} <= set(
        events_since(svc, tenant, cursor)
    )
    stored = reload(svc, thread)
    assert (stored.priority, stored.needs_attention) == ("urgent", True)
    assert stored.assigned_user_id == operator.id
    assert last_log(svc).action == "emergency_in_human_mode"
    assert the_ticket(svc).acknowledged_at is None


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_release_does_not_drop_an_unacknowledged_emergency(consented, svc, tenant, operator):
    thread = held_emergency(consented, svc, operator)

    with svc.db.session() as session:
        move = handoff.release(session, actor_for(operator), thread.id)

    stored = reload(svc, thread)
    assert (stored.mode, stored.priority, stored.needs_attention) == ("bot", "urgent", True)
    assert "resta urgente" in move.message
    step = timeline(svc, the_ticket(svc))[-1]
    assert (step.kind, step.detail["acknowledged"]) == ("released", False)
    # The idle timeout does not give it back either.
    assert handoff.release_idle_conversations(svc, utcnow() + timedelta(days=1)) == 0


def test_release_after_acknowledgement_gives_the_bot_a_normal_conversation(
    consented, svc, tenant, operator
):
    thread = held_emergency(consented, svc, operator)
    acknowledge_emergency(svc, tenant.id, thread.id, actor="api", user_id=None, via="api")

    with svc.db.session() as session:
        handoff.release(session, actor_for(operator), thread.id)

    stored = reload(svc, thread)
    assert (stored.mode, stored.priority, stored.needs_attention) == ("bot", "normal", False)
    assert timeline(svc, the_ticket(svc))[-1].detail["acknowledged"] is True


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_closing_an_unacknowledged_emergency_needs_a_reason(consented, svc, tenant, operator):
    thread = held_emergency(consented, svc, operator)

    with pytest.raises(Refused, match="indica il motivo"), svc.db.session() as session:
        handoff.close(session, actor_for(operator), thread.id)
    assert reload(svc, thread).status == "open"
    with svc.db.session() as session:
        handoff.close(session, actor_for(operator), thread.id, "Falso allarme, sentito al telefono")

    assert reload(svc, thread).status == "closed"
    ticket = the_ticket(svc)
    assert ticket.status == "done" and ticket.acknowledged_at is None
    step = timeline(svc, ticket)[-1]
    assert (step.kind, step.detail["reason"]) == ("closed", "Falso allarme, sentito al telefono")
    [closed] = audit_rows(svc, "conversation.close")
    assert closed.detail["unacknowledged_emergencies"] == [ticket.id]


def test_the_console_asks_for_the_reason_and_the_ticket_page_cannot_skip_it(
    consented, svc, tenant, operator, signed_in
):
    thread = held_emergency(consented, svc, operator)
    page = f"/console/conversations/{thread.id}"
    assert 'name="reason"' in signed_in.get(page).get_data(as_text=True)

    refused = post_form(signed_in, f"{page}/close", page=page)
    ticket_page = f"/console/tickets/{the_ticket(svc).id}"
    skipped = post_form(signed_in, f"{ticket_page}/status", {"status": "done"}, page=ticket_page)

    assert "indica il motivo" in refused.get_data(as_text=True)
    assert "prendila in carico" in skipped.get_data(as_text=True)
    assert (reload(svc, thread).status, the_ticket(svc).status) == ("open", "open")
    closed = post_form(signed_in, f"{page}/close", {"reason": "Gestita al telefono"}, page=page)
    assert "Conversazione chiusa" in closed.get_data(as_text=True)


def test_assigning_an_emergency_to_a_colleague_keeps_it_waiting(consented, svc, tenant, operator):
    thread = held_emergency(consented, svc, operator)
    colleague = make_user(svc, tenant, "bruno@studio-rossi.it")

    with svc.db.session() as session:
        handoff.assign(session, actor_for(operator), thread.id, colleague.id, utcnow())

    stored = reload(svc, thread)
    assert (stored.assigned_user_id, stored.needs_attention) == (colleague.id, True)


# -- the console: call the resident ------------------------------------------------------


def test_every_conversation_offers_a_tel_link_to_the_resident(signed_in, svc, tenant):
    thread = make_conversation(svc, tenant)
    page = signed_in.get(f"/console/conversations/{thread.id}").get_data(as_text=True)
    assert f'href="tel:{RESIDENT}"' in page
    assert "cannot-write" not in page


def test_the_page_says_to_call_when_the_gate_would_refuse_a_reply(signed_in, svc, tenant):
    contact = make_contact(svc, tenant, consent="withdrawn")
    thread = make_conversation(svc, tenant, contact)
    page = signed_in.get(f"/console/conversations/{thread.id}").get_data(as_text=True)
    assert 'id="cannot-write"' in page
    assert f'Non è possibile scrivere: chiamalo al <a href="tel:{RESIDENT}">' in page


# -- office hours -----------------------------------------------------------------------

WEEKDAYS_9_TO_6 = {
    f"hours.{day}": "09:00-13:00,14:30-18:00" for day in "mon tue wed thu fri".split()
}


def hours(**changes: str) -> OfficeHours:
    settings: dict[str, Any] = {}
    for assignment in (f"{k}={v}" for k, v in {**WEEKDAYS_9_TO_6, **changes}.items()):
        key, value = parse_assignment(assignment)
        group, _, name = key.partition(".")
        if name:
            settings.setdefault(group, {})[name] = value
        else:
            settings[key] = value
    found = OfficeHours.from_settings(settings)
    assert found is not None
    return found


def rome(*args: int) -> datetime:
    return datetime(*args, tzinfo=OFFICE_ZONE)


def test_office_hours_know_when_the_office_is_open_in_rome_time():
    week = hours()
    assert week.is_open(rome(2026, 12, 14, 9, 0))  # a Monday
    assert not week.is_open(rome(2026, 12, 14, 13, 30))
    assert not week.is_open(rome(2026, 12, 19, 10, 0))  # a Saturday
    assert week.is_open(datetime(2026, 12, 14, 8, 30, tzinfo=UTC))  # 9:30 in Rome


def test_the_next_opening_skips_closing_days_and_the_weekend():
    week = hours(closed_days="2026-12-24,2026-12-25")
    assert week.next_opening(rome(2026, 12, 23, 19, 0)) == rome(2026, 12, 28, 9, 0)
    assert week.next_opening(rome(2026, 12, 14, 13, 30)) == rome(2026, 12, 14, 14, 30)


def test_the_week_is_described_in_italian():
    assert hours(**{"hours.sat": "09:00-12:00"}).describe_week() == (
        "lunedì-venerdì 9:00-13:00 e 14:30-18:00; sabato 9:00-12:00"
    )


@pytest.mark.parametrize(
    ("assignment", "problem"),
    [
        ("hours.mon=9-13", "HH:MM"),
        ("hours.mon=13:00-09:00", "after the start"),
        ("hours.mon=09:00-13:00,12:00-15:00", "overlap"),
        ("hours.mon=25:00-26:00", "00:00 to 23:59"),
        ("hours.lun=09:00-13:00", "unknown setting"),
        ("closed_days=24/12/2026", "not a date"),
        ("handoff.reminder_minutes=-1", "from 0 to 1440"),
    ],
)
def test_office_hours_settings_are_validated(assignment, problem):
    with pytest.raises(InvalidSetting, match=problem):
        parse_assignment(assignment)


def test_office_hours_are_set_from_the_cli(runner, tenant):
    result = runner.invoke(
        args=[
            "tenant",
            "settings",
            "--tenant",
            tenant.slug,
            "--set",
            "hours.mon=09:00-13:00,14:30-18:00",
            "--set",
            "hours.sat=closed",
            "--set",
            "closed_days=2026-12-25,2026-12-24",
            "--set",
            "handoff.reminder_minutes=20",
        ]
    )
    assert result.exit_code == 0, result.output
    effective = json.loads(result.output)
    assert effective["hours"]["mon"] == [["09:00", "13:00"], ["14:30", "18:00"]]
    assert effective["hours"]["sat"] == []
    assert effective["closed_days"] == ["2026-12-24", "2026-12-25"]
    assert effective["handoff"] == {"reminder_minutes": 20}


def closed_today(svc: Services, tenant: Tenant) -> None:
    today = datetime.now(OFFICE_ZONE).date()
    update_settings(
        svc,
        tenant.id,
        {
            **{
                f"hours.{day}": [["08:00", "20:00"]]
                for day in "mon tue wed thu fri sat sun".split()
            },
            "closed_days": [today.isoformat()],
        },
        actor="test",
    )


def test_out_of_hours_the_acknowledgement_says_when_the_office_reopens(
    consented, svc, tenant, twilio
):
    closed_today(svc, tenant)

    say(consented, svc, "Il citofono della scala A non funziona")

    [ack] = [m["Body"] for m in twilio.messages]
    assert ack.startswith(TEXTS["ack_guasto"].format(ticket=1, building=""))
    assert "L'ufficio ora è chiuso e riapre domani alle 8:00" in ack
    assert "112" in ack
    assert last_log(svc).detail["replies"] == [["ack_guasto", "reply", "out_of_hours"]]


def test_in_office_hours_the_acknowledgement_is_plain(consented, svc, tenant, twilio):
    say(consented, svc, "Il citofono della scala A non funziona")
    assert [m["Body"] for m in twilio.messages] == [
        TEXTS["ack_guasto"].format(ticket=1, building="")
    ]


def test_an_emergency_out_of_hours_gets_the_safety_advice_alone(consented, svc, tenant, twilio):
    closed_today(svc, tenant)
    say(consented, svc, GAS)
    assert [m["Body"] for m in twilio.messages] == [TEXTS["emergency_gas"]]


def test_closed_now_is_none_for_an_office_without_hours():
    assert closed_now({}, utcnow()) is None


# -- the reminder after a handoff -------------------------------------------------------


def test_one_reminder_with_the_hours_when_no_operator_answered(consented, svc, tenant, twilio):
    update_settings(svc, tenant.id, {"hours.mon": [["09:00", "13:00"]]}, actor="test")
    say(consented, svc, "OPERATORE")
    assert twilio.messages[-1]["Body"].startswith(TEXTS["handoff"])
    later = utcnow() + timedelta(minutes=16)

    assert handoff.send_handoff_reminders(svc, utcnow() + timedelta(minutes=10)) == 0
    assert handoff.send_handoff_reminders(svc, later) == 1
    assert handoff.send_handoff_reminders(svc, later + timedelta(hours=1)) == 0
    drain(svc)

    reminders = [m["Body"] for m in twilio.messages if "Non ci siamo dimenticati" in m["Body"]]
    assert len(reminders) == 1
    assert "Orari dell'ufficio: lunedì 9:00-13:00." in reminders[0]
    with svc.db.read() as session:
        logged = session.scalar(select(BotLogEntry).where(BotLogEntry.action == "handoff_reminder"))
    assert logged is not None and logged.detail["refused"] is None


def test_no_reminder_once_an_operator_has_written(consented, svc, tenant, twilio):
    say(consented, svc, "OPERATORE")
    thread = the_conversation(svc)
    add_message(svc, thread, "Eccomi", direction="out", purpose="operator")

    assert handoff.send_handoff_reminders(svc, utcnow() + timedelta(hours=1)) == 0


def test_the_reminder_waits_the_offices_own_minutes(consented, svc, tenant):
    update_settings(svc, tenant.id, {"handoff.reminder_minutes": 30}, actor="test")
    say(consented, svc, "OPERATORE")
    assert handoff.send_handoff_reminders(svc, utcnow() + timedelta(minutes=16)) == 0
    assert handoff.send_handoff_reminders(svc, utcnow() + timedelta(minutes=31)) == 1


def test_a_new_handoff_after_release_can_be_reminded_again(consented, svc, tenant, operator):
    say(consented, svc, "OPERATORE")
    assert handoff.send_handoff_reminders(svc, utcnow() + timedelta(minutes=16)) == 1
    thread = the_conversation(svc)
    with svc.db.session() as session:
        handoff.takeover(session, actor_for(operator), thread.id, utcnow())
    with svc.db.session() as session:
        handoff.release(session, actor_for(operator), thread.id)
    say(consented, svc, "OPERATORE")
    assert handoff.send_handoff_reminders(svc, utcnow() + timedelta(minutes=16)) == 1


# -- the priority lane ------------------------------------------------------------------


def message_id_of(svc: Services, sid: str) -> int:
    with svc.db.read() as session:
        found = session.scalar(select(Message.id).where(Message.provider_sid == sid))
        assert found is not None
        return found


def test_an_emergency_overtakes_queued_first_messages(client, svc, tenant, twilio):
    svc.jobs.triage = lane_triage(svc)
    for n in range(3):
        send_inbound(client, "Buongiorno, la luce delle scale non va", sender=f"+39333000000{n}")
    report = send_inbound(client, "Aiuto, c'è fumo dal garage", sender=NEIGHBOUR)

    svc.jobs.relay_waiting()
    assert svc.jobs.urgent_queue.job_ids == [f"inbound-{message_id_of(svc, report['MessageSid'])}"]
    assert svc.jobs.queue.count == 1  # the three ordinary ones, in one batch
    drain(svc)

    first = twilio.messages[0]
    assert (first["To"], first["Body"]) == (f"whatsapp:{NEIGHBOUR}", TEXTS["emergency_fire"])
    assert len(twilio.messages) == 5  # the advice and a welcome for each of the four


def test_without_a_triage_every_message_keeps_its_place(client, svc, tenant):
    send_inbound(client, "Aiuto, c'è fumo dal garage", sender=NEIGHBOUR)
    svc.jobs.relay_waiting()
    assert (svc.jobs.urgent_queue.count, svc.jobs.queue.count) == (0, 1)


def test_a_failing_triage_still_queues_every_message(client, svc, tenant):
    def broken(message_ids: list[int]) -> Triaged:
        raise RuntimeError("model unavailable")

    svc.jobs.triage = broken
    send_inbound(client, "Aiuto, c'è fumo dal garage", sender=NEIGHBOUR)
    send_inbound(client, "Buongiorno")
    svc.jobs.relay_waiting()
    assert (svc.jobs.urgent_queue.count, svc.jobs.queue.count) == (0, 1)
    assert len(svc.jobs.queue.jobs[0].args[0]) == 2


def test_safety_advice_is_not_held_back_by_the_offices_send_rate(consented, svc, tenant, twilio):
    update_settings(svc, tenant.id, {"send_rate_per_second": 1}, actor="test")
    with svc.db.read() as session:
        contact = session.scalar(select(Contact))
        office = session.get(Tenant, tenant.id)
    assert contact is not None and office is not None
    ordinary = Outgoing(text="x", purpose="reply")
    decisions = [check_outbound(svc, office, contact, ordinary) for _ in range(3)]
    assert "rate_limited" in [d.reason for d in decisions]
    assert check_outbound(svc, office, contact, Outgoing(text="x", purpose="safety")).allowed


def test_unacknowledged_emergencies_of_a_terminated_office_are_not_listed(consented, svc, tenant):
    say(consented, svc, GAS)
    with svc.db.session() as session:
        office = session.get(Tenant, tenant.id)
        assert office is not None
        office.terminated_at = utcnow()
    with svc.db.read() as session:
        assert unacknowledged_emergencies(session, utcnow()) == []
