"""Escalation of an unacknowledged emergency: the pure planner, exhaustively; the calls
placed through the real twilio SDK against the fake's Calls endpoint; the callee's
keypress, signed as Twilio signs it, on the voice webhook."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest
from fake_twilio import FakeTwilio
from helpers import PUBLIC_BASE_URL, RESIDENT, audit_actions, make_conversation, sign
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from bot.conversation.escalation import (
    CallMade,
    OpenEmergency,
    on_keypress_ack,
    plan_escalation,
    run_escalation,
)
from bot.office.oncall import OnCall, add_oncall
from bot.office.settings import update_settings
from storage.models import AuditEvent, EscalationCall
from storage.vocabulary import CallOutcome

T0 = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
ROTA = (OnCall(1, 1, "Mario", "+393331112222"), OnCall(2, 2, "Lucia", "+393334445555"))
MARIO, LUCIA = ROTA[0].phone, ROTA[1].phone
ACK = 10
VOICE_ACK = "/webhooks/twilio/voice/ack"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plan(now, calls=(), *, acknowledged=False, rota=ROTA, ack=ACK, rounds=2):
    return plan_escalation(now, T0, acknowledged, rota, ack, rounds, list(calls))


# -- the planner ----------------------------------------------------------------------------


def test_nobody_is_called_before_the_acknowledgement_time():
    assert plan(at(ACK - 1)) is None


def test_the_first_person_is_called_once_the_acknowledgement_time_has_passed():
    call = plan(at(ACK))

    assert (call.person, call.round, call.index) == (ROTA[0], 1, 0)


def test_the_next_person_gets_their_own_acknowledgement_time():
    calls = [CallMade(at(ACK + 3))]

    assert plan(at(2 * ACK + 2), calls) is None
    assert plan(at(2 * ACK + 3), calls).person == ROTA[1]


def test_a_refused_call_lets_the_next_person_be_called_at_once():
    call = plan(at(ACK + 1), [CallMade(at(ACK), failed=True)])

    assert call is not None and call.person == ROTA[1]


def test_after_the_last_person_the_rota_starts_again_in_the_next_round():
    calls = [CallMade(at(ACK)), CallMade(at(2 * ACK))]

    call = plan(at(3 * ACK), calls)

    assert (call.person, call.round, call.index) == (ROTA[0], 2, 2)


def test_the_escalation_stops_after_the_last_round():
    calls = [CallMade(at(ACK * (n + 1))) for n in range(4)]

    assert plan(at(100 * ACK), calls, rounds=2) is None


def test_an_acknowledgement_stops_the_escalation_at_once():
    assert plan(at(5 * ACK), [CallMade(at(ACK))], acknowledged=True) is None


def test_nobody_on_call_means_no_call():
    assert plan(at(5 * ACK), rota=()) is None


@pytest.mark.parametrize(
    ("people", "rounds", "acknowledged_after"),
    list(itertools.product((1, 2, 3), (1, 2, 3), (None, 0, 1, 2, 4))),
)
def test_a_whole_escalation_calls_each_person_once_per_round_in_order(
    people, rounds, acknowledged_after
):
    """Every rota size, round count and moment of acknowledgement, stepping through time."""
    rota = ROTA + (OnCall(3, 3, "Piero", "+393337778888"),)
    rota = rota[:people]
    calls: list[CallMade] = []
    placed: list[tuple[str, int]] = []
    for second in range(0, ACK * (people * rounds + 3), 1):
        acknowledged = acknowledged_after is not None and len(calls) >= acknowledged_after
        call = plan_escalation(at(second), T0, acknowledged, rota, ACK, rounds, calls)
        if call is not None:
            calls.append(CallMade(at(second)))
            placed.append((call.person.name, call.round))
    expected = [(person.name, n) for n in range(1, rounds + 1) for person in rota]
    if acknowledged_after is not None:
        expected = expected[:acknowledged_after]
    assert placed == expected
    # Each call came ack_seconds after the one before (the first after the opening).
    moments = [T0] + [call.at for call in calls]
    assert all(b - a == timedelta(seconds=ACK) for a, b in itertools.pairwise(moments))


@given(
    people=st.integers(0, 4),
    rounds=st.integers(0, 4),
    made=st.integers(0, 20),
    elapsed=st.integers(0, 10_000),
    failed=st.booleans(),
)
def test_the_planner_never_exceeds_the_rounds_and_names_the_right_person(
    people, rounds, made, elapsed, failed
):
    rota = tuple(OnCall(n, n, f"P{n}", f"+3933300000{n:02d}") for n in range(people))
    calls = [CallMade(at(ACK * (n + 1)), failed=failed) for n in range(made)]

    call = plan_escalation(at(elapsed), T0, False, rota, ACK, rounds, calls)

    if call is None:
        return
    assert made < people * rounds
    assert call.person == rota[made % people]
    assert call.round == made // people + 1 <= rounds
    last = calls[-1].at if calls else T0
    assert at(elapsed) >= last + (timedelta(0) if calls and failed else timedelta(seconds=ACK))


# -- placing calls through Twilio -----------------------------------------------------------


@pytest.fixture
def on_call(svc, tenant):
    add_oncall(svc, tenant.id, "Mario", MARIO, actor="test")
    add_oncall(svc, tenant.id, "Lucia", LUCIA, actor="test")
    update_settings(svc, tenant.id, {"emergency.ack_seconds": ACK}, actor="test")


@pytest.fixture
def emergency(svc, tenant, on_call) -> OpenEmergency:
    conversation = make_conversation(svc, tenant, priority="urgent")
    return OpenEmergency(
        tenant_id=tenant.id,
        conversation_id=conversation.id,
        opened_at=T0,
        hazard="gas_smell",
        place={"street": "via Roma 12"},
    )


def rows(svc) -> list[EscalationCall]:
    with svc.db.read() as session:
        return list(session.scalars(select(EscalationCall).order_by(EscalationCall.sequence)))


def test_a_due_call_is_placed_through_twilio_from_the_office_number(
    svc, tenant, emergency, twilio: FakeTwilio
):
    assert run_escalation(svc, at(ACK - 1), [emergency]) == []

    (placed,) = run_escalation(svc, at(ACK), [emergency])

    (call,) = twilio.wait_for_calls(1)
    assert (call["To"], call["From"]) == (MARIO, tenant.whatsapp_number)
    assert placed.call_sid == call["sid"] and placed.outcome == CallOutcome.PLACED
    said = " ".join(twilio.said(call["sid"], language="it-IT"))
    assert "odore di gas" in said and "via Roma 12" in said and "Premere 1" in said


def test_the_call_comes_from_the_configured_number(svc, tenant, emergency, twilio):
    update_settings(svc, tenant.id, {"emergency.call_from": "+390212345679"}, actor="test")

    run_escalation(svc, at(ACK), [emergency])

    assert twilio.wait_for_calls(1)[0]["From"] == "+390212345679"


def test_the_spoken_text_names_no_phone_number_and_no_resident(svc, emergency, twilio):
    run_escalation(svc, at(ACK), [emergency])

    (call,) = twilio.wait_for_calls(1)
    said = " ".join(twilio.said(call["sid"]))
    assert RESIDENT not in said and RESIDENT.lstrip("+") not in said
    assert MARIO.lstrip("+") not in said
    assert not re.search(r"\d{5,}", said)
    assert "Mario" not in call["Twiml"]


def test_round_after_round_up_to_the_configured_rounds(svc, tenant, emergency, twilio):
    seconds = [ACK * n for n in range(1, 8)]

    called = [
        (placed.round, placed.call_sid)
        for second in seconds
        for placed in run_escalation(svc, at(second), [emergency])
    ]

    calls = twilio.wait_for_calls(4)
    assert [c["To"] for c in calls] == [MARIO, LUCIA, MARIO, LUCIA]
    assert [round_ for round_, _ in called] == [1, 1, 2, 2]
    assert audit_actions(svc, tenant).count("escalation.call") == 4


def test_every_call_is_audited_without_a_phone_number(svc, tenant, emergency, twilio):
    run_escalation(svc, at(ACK), [emergency])

    with svc.db.read() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "escalation.call")
        ).one()
    assert event.detail["round"] == 1 and event.detail["outcome"] == "placed"
    assert MARIO not in str(event.detail)


def test_a_call_twilio_refuses_is_recorded_and_the_next_person_called_at_once(
    svc, emergency, twilio
):
    run_escalation(svc, at(ACK), [emergency])
    with svc.db.session() as session:
        first = session.scalars(select(EscalationCall)).one()
        # As if Twilio had refused it (the fake scripts faults on Messages only).
        first.outcome = CallOutcome.FAILED

    (placed,) = run_escalation(svc, at(ACK + 1), [emergency])

    assert placed.oncall_id == rows(svc)[1].oncall_id and placed.round == 1
    assert twilio.wait_for_calls(2)[1]["To"] == LUCIA


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_call_is_placed_once_however_often_the_runner_comes(svc, emergency, twilio):
    for _ in range(3):
        run_escalation(svc, at(ACK), [emergency])

    assert len(twilio.calls) == 1
    assert [row.sequence for row in rows(svc)] == [0]


def test_an_acknowledged_emergency_is_not_escalated(svc, emergency, twilio):
    from dataclasses import replace

    assert run_escalation(svc, at(10 * ACK), [replace(emergency, acknowledged=True)]) == []
    assert twilio.calls == []


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_calls_of_an_earlier_emergency_of_the_same_conversation_do_not_count(
    svc, emergency, twilio
):
    from dataclasses import replace

    run_escalation(svc, at(ACK), [emergency])
    on_keypress_ack(svc, rows(svc)[0].call_sid, "1")
    later = replace(emergency, opened_at=at(3600))

    (placed,) = run_escalation(svc, at(3600 + ACK), [later])

    assert placed.round == 1 and placed.sequence == 1
    assert twilio.wait_for_calls(2)[1]["To"] == MARIO


# -- the keypress -----------------------------------------------------------------------------


def press(client, twilio: FakeTwilio, call_sid: str, digits: str):
    request = twilio.press(call_sid, digits, public_base_url=PUBLIC_BASE_URL)
    response = client.post(request.path, data=request.params, headers=request.headers)
    if response.status_code == 200:
        twilio.continue_call(call_sid, response.get_data(as_text=True), url=request.url)
    return response


def placed_call(svc, emergency, twilio) -> str:
    run_escalation(svc, at(ACK), [emergency])
    return twilio.wait_for_calls(1)[0]["sid"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_pressing_1_acknowledges_and_stops_the_escalation(svc, tenant, client, emergency, twilio):
    sid = placed_call(svc, emergency, twilio)

    response = press(client, twilio, sid, "1")

    assert response.status_code == 200 and response.mimetype == "text/xml"
    assert "Presa in carico registrata, grazie" in twilio.said(sid, language="it-IT")[-1]
    assert twilio.call(sid)["status"] == "completed"
    (row,) = rows(svc)
    assert row.outcome == CallOutcome.ACKNOWLEDGED and row.acknowledged_at is not None
    assert "escalation.acknowledged" in audit_actions(svc, tenant)
    assert run_escalation(svc, at(10 * ACK), [emergency]) == []
    assert len(twilio.calls) == 1


def test_a_wrong_key_repeats_the_message_once_then_says_goodbye(svc, client, emergency, twilio):
    sid = placed_call(svc, emergency, twilio)

    press(client, twilio, sid, "5")
    again = twilio.said(sid, language="it-IT")
    press(client, twilio, sid, "7")

    wrong = again.index("Tasto non valido.")
    assert "odore di gas" in again[wrong + 1]  # the message, said once more
    assert twilio.said(sid)[-1].startswith("Nessuna presa in carico registrata")
    assert twilio.call(sid)["status"] == "completed"
    assert rows(svc)[0].outcome == CallOutcome.PLACED


def test_pressing_1_after_a_wrong_key_still_acknowledges(svc, client, emergency, twilio):
    sid = placed_call(svc, emergency, twilio)

    press(client, twilio, sid, "9")
    press(client, twilio, sid, "1")

    assert rows(svc)[0].outcome == CallOutcome.ACKNOWLEDGED


def test_a_repeated_press_is_audited_once(svc, tenant, emergency, twilio):
    sid = placed_call(svc, emergency, twilio)

    assert on_keypress_ack(svc, sid, "1") and on_keypress_ack(svc, sid, "1")

    assert audit_actions(svc, tenant).count("escalation.acknowledged") == 1


def test_a_keypress_on_an_unknown_call_acknowledges_nothing(svc, client, twilio):
    assert on_keypress_ack(svc, "CA" + "0" * 32, "1") is False


def test_a_forged_keypress_is_refused(svc, client, emergency, twilio):
    sid = placed_call(svc, emergency, twilio)
    request = twilio.press(sid, "1", public_base_url=PUBLIC_BASE_URL, auth_token="not-our-token")

    response = client.post(request.path, data=request.params, headers=request.headers)

    assert response.status_code == 403
    assert rows(svc)[0].outcome == CallOutcome.PLACED


def test_a_keypress_signed_for_another_attempt_is_refused(svc, client, emergency, twilio):
    sid = placed_call(svc, emergency, twilio)
    request = twilio.press(sid, "1", public_base_url=PUBLIC_BASE_URL)

    response = client.post(
        request.path.replace("attempt=1", "attempt=2"), data=request.params, headers=request.headers
    )

    assert response.status_code == 403


def test_a_keypress_without_a_call_sid_is_malformed(client):
    params = {"Digits": "1", "AccountSid": "AC" + "1" * 32}
    url = PUBLIC_BASE_URL + VOICE_ACK
    response = client.post(
        VOICE_ACK, data=params, headers={"X-Twilio-Signature": sign(url, params)}
    )

    assert response.status_code == 400


def test_a_keypress_body_that_is_not_utf8_is_malformed(client):
    response = client.post(
        VOICE_ACK,
        data=b"CallSid=%FF%FE&Digits=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    )

    assert response.status_code == 400


@pytest.mark.parametrize("app_config_extra", [{"WHATSAPP_TRANSPORT": "console"}], indirect=True)
def test_without_twilio_the_console_transport_records_the_call(svc, emergency, twilio):
    (placed,) = run_escalation(svc, at(ACK), [emergency])

    (recorded,) = svc.transport.calls
    assert (recorded.to, placed.outcome) == (MARIO, CallOutcome.PLACED)
    assert '<Say language="it-IT">' in recorded.twiml
    assert twilio.calls == []
