"""Consent end to end: welcome, acceptance, opt-out, the ledger, the gate, the API."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
import sqlalchemy.exc
from helpers import OFFICE_NUMBER, RESIDENT, drain, make_tenant, send_inbound
from sqlalchemy import select, text, update

from bot.office.tokens import create_token
from bot.services import Services
from storage.models import ConsentEvent, Contact, Message, Tenant, utcnow

pytestmark = pytest.mark.usefixtures("tenant")


def token_for(svc: Services, tenant: Tenant) -> str:
    with svc.db.session() as session:
        return create_token(session, tenant, "crm")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ledger(svc: Services) -> list[ConsentEvent]:
    with svc.db.session() as session:
        return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


def the_contact(svc: Services) -> Contact:
    with svc.db.session() as session:
        contact = session.scalar(select(Contact))
        assert contact is not None
        return contact


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_scripted_conversation_from_welcome_to_opt_out(client, svc, twilio, tenant):
    token = token_for(svc, tenant)

    send_inbound(client, "Buongiorno, sono del condominio Le Rose")
    drain(svc)
    assert len(twilio.messages) == 1
    welcome = twilio.messages[0]["Body"]
    assert "ACCETTO" in welcome and "Studio Rossi" in welcome
    assert f"/privacy/{tenant.slug}" in welcome
    assert "F24" in welcome  # the rules of use name what must not travel here
    assert the_contact(svc).consent == "pending"

    accepted = send_inbound(client, "Accetto!")
    drain(svc)
    assert len(twilio.messages) == 2
    assert "consenso è registrato" in twilio.messages[1]["Body"]
    granted = [e for e in ledger(svc) if e.event == "granted"][0]
    assert svc.cipher.decrypt(granted.evidence_text) == "accetto"  # the keyword phrase
    assert granted.evidence_message_sid == accepted["MessageSid"]
    assert granted.evidence_sha256 == hashlib.sha256(b"Accetto!").hexdigest()
    assert granted.notice_version == "1" and len(granted.notice_sha256) == 64
    assert the_contact(svc).consent == "granted"

    send_inbound(client, "Grazie mille")
    drain(svc)
    assert len(twilio.messages) == 3

    send_inbound(client, "STOP")
    drain(svc)
    assert len(twilio.messages) == 4
    assert "non riceverà più messaggi" in twilio.messages[3]["Body"]
    assert the_contact(svc).consent == "withdrawn"

    refused = client.post(
        "/api/v1/messages",
        headers=bearer(token),
        json={"to": RESIDENT, "body": "Promemoria assemblea"},
    )
    assert refused.status_code == 409
    assert refused.get_json()["error"] == "opted_out"
    send_inbound(client, "ci siete?")
    drain(svc)
    assert len(twilio.messages) == 4
    assert [e.event for e in ledger(svc)] == ["notice_sent", "granted", "withdrawn"]


def test_consent_events_api_shows_the_evidence(client, svc, tenant):
    token = token_for(svc, tenant)
    send_inbound(client, "salve")
    drain(svc)
    send_inbound(client, "sì")
    drain(svc)
    contact = the_contact(svc)

    answer = client.get(f"/api/v1/contacts/{contact.id}/consent-events", headers=bearer(token))

    events = answer.get_json()["events"]
    assert [e["event"] for e in events] == ["notice_sent", "granted"]
    assert events[1]["evidence"]["text"] == "si"
    assert events[1]["evidence"]["sha256"] == hashlib.sha256("sì".encode()).hexdigest()
    assert events[1]["actor"] == "contact"
    assert events[1]["channel"] == "whatsapp"
    assert events[1]["at"].endswith("Z")


def test_a_message_before_acceptance_gets_a_reminder_not_service(client, svc, twilio):
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "il citofono della scala B non funziona")
    drain(svc)

    assert len(twilio.messages) == 2
    assert "ACCETTO" in twilio.messages[1]["Body"]
    assert the_contact(svc).consent == "pending"


def test_acceptance_followed_by_a_message_accepts_and_handles_the_rest(client, svc, twilio):
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "sì ma il citofono non va")
    drain(svc)

    assert the_contact(svc).consent == "granted"
    bodies = [m["Body"] for m in twilio.messages[1:]]
    assert "consenso è registrato" in bodies[0]
    assert len(bodies) == 2  # the confirmation, then the answer to the message


def test_advanced_opt_out_is_recorded_and_not_answered_twice(client, svc, twilio):
    send_inbound(client, "buongiorno")
    drain(svc)

    send_inbound(client, "STOP", OptOutType="STOP")
    drain(svc)

    assert len(twilio.messages) == 1
    withdrawn = ledger(svc)[-1]
    assert withdrawn.event == "withdrawn"
    assert withdrawn.channel == "twilio_advanced_opt_out"
    assert the_contact(svc).consent == "withdrawn"


@pytest.mark.parametrize("code", [21610, 63014])
def test_send_failing_with_opt_out_code_marks_the_contact_withdrawn(
    client, svc, twilio, tenant, code
):
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "accetto")
    twilio.fail_next(400, code=code)
    drain(svc)

    contact = the_contact(svc)
    assert contact.consent == "withdrawn"
    assert ledger(svc)[-1].channel == "twilio_error"


def test_status_callback_with_opt_out_error_marks_the_contact_withdrawn(client, svc, twilio):
    from helpers import post_signed

    send_inbound(client, "buongiorno")
    drain(svc)
    params = {
        "MessageSid": twilio.messages[0]["sid"],
        "MessageStatus": "undelivered",
        "ErrorCode": "63014",
        "From": f"whatsapp:{OFFICE_NUMBER}",
    }

    assert post_signed(client, "/webhooks/twilio/status", params).status_code == 204
    assert the_contact(svc).consent == "withdrawn"


def _granted_contact(client, svc) -> Contact:
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "accetto")
    drain(svc)
    return the_contact(svc)


def _age_last_inbound(svc: Services, hours: int) -> None:
    with svc.db.session() as session:
        session.execute(update(Contact).values(last_inbound_at=utcnow() - timedelta(hours=hours)))


def test_free_text_25_hours_after_the_last_message_is_refused_422(client, svc, tenant, twilio):
    _granted_contact(client, svc)
    _age_last_inbound(svc, 25)
    token = token_for(svc, tenant)

    answer = client.post(
        "/api/v1/messages",
        headers=bearer(token),
        json={"to": RESIDENT, "body": "La riunione è spostata"},
    )

    assert answer.status_code == 422
    assert answer.get_json()["error"] == "outside_window"
    assert "24 ore" in answer.get_json()["message"]


def test_template_25_hours_after_the_last_message_is_accepted(client, svc, tenant, twilio):
    _granted_contact(client, svc)
    _age_last_inbound(svc, 25)
    token = token_for(svc, tenant)
    before = len(twilio.messages)

    answer = client.post(
        "/api/v1/messages",
        headers=bearer(token),
        json={
            "to": RESIDENT,
            "template": {"content_sid": "HX" + "a" * 32, "variables": {"1": "12/12"}},
        },
    )
    drain(svc)

    assert answer.status_code == 202
    assert answer.get_json()["status"] == "pending"
    sent = twilio.messages[before]
    assert sent["ContentSid"] == "HX" + "a" * 32
    assert "Body" not in sent or not sent["Body"]


def test_api_send_within_the_window_is_accepted_and_delivered(client, svc, tenant, twilio):
    _granted_contact(client, svc)
    token = token_for(svc, tenant)

    answer = client.post(
        "/api/v1/messages",
        headers=bearer(token),
        json={"to": "333 123 4567", "body": "Il tecnico passa domani alle 10"},
    )
    drain(svc)

    assert answer.status_code == 202
    assert twilio.messages[-1]["Body"] == "Il tecnico passa domani alle 10"


def test_api_send_to_a_contact_who_never_accepted_is_refused_409(client, svc, tenant):
    send_inbound(client, "buongiorno")
    drain(svc)
    token = token_for(svc, tenant)

    answer = client.post(
        "/api/v1/messages", headers=bearer(token), json={"to": RESIDENT, "body": "Offerta"}
    )

    assert answer.status_code == 409
    assert answer.get_json()["error"] == "no_consent"


def test_api_send_to_an_unknown_number_is_404(client, svc, tenant):
    answer = client.post(
        "/api/v1/messages",
        headers=bearer(token_for(svc, tenant)),
        json={"to": "+393479999999", "body": "ciao"},
    )

    assert answer.status_code == 404
    assert answer.get_json()["error"] == "unknown_contact"


def test_api_send_over_the_tenant_rate_is_429(client, svc, tenant):
    _granted_contact(client, svc)
    with svc.db.session() as session:
        stored = session.get(Tenant, tenant.id)
        stored.settings = {**stored.settings, "send_rate_per_second": 1}
    token = token_for(svc, tenant)

    answers = [
        client.post(
            "/api/v1/messages",
            headers=bearer(token),
            json={"to": RESIDENT, "body": f"messaggio {i}"},
        ).status_code
        for i in range(5)
    ]

    assert 429 in answers


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"to": RESIDENT},
        {"to": RESIDENT, "body": ""},
        {"to": "non un numero", "body": "x"},
        {"to": RESIDENT, "template": "HX1"},
    ],
)
def test_api_malformed_send_is_400_json(client, svc, tenant, payload):
    answer = client.post("/api/v1/messages", headers=bearer(token_for(svc, tenant)), json=payload)

    assert answer.status_code == 400
    assert answer.is_json


def test_api_without_token_is_401_json(client):
    answer = client.get("/api/v1/contacts")

    assert answer.status_code == 401
    assert answer.get_json()["error"] == "unauthorized"


def test_tenant_a_token_cannot_read_tenant_b_contact(client, svc, tenant):
    _granted_contact(client, svc)
    contact = the_contact(svc)
    other = make_tenant(svc, slug="studio-bianchi", number="+390612345678")
    other_token = token_for(svc, other)

    assert (
        client.get(
            f"/api/v1/contacts/{contact.id}/consent-events", headers=bearer(other_token)
        ).status_code
        == 404
    )
    listed = client.get(f"/api/v1/contacts?phone={RESIDENT}", headers=bearer(other_token))
    assert listed.get_json()["contacts"] == []
    mine = client.get(f"/api/v1/contacts?phone={RESIDENT}", headers=bearer(token_for(svc, tenant)))
    assert mine.get_json()["contacts"][0]["consent"] == "granted"


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_database_refuses_to_update_or_delete_the_ledger(client, svc):
    send_inbound(client, "buongiorno")
    drain(svc)
    assert len(ledger(svc)) == 1

    with pytest.raises(sqlalchemy.exc.DatabaseError), svc.db.engine.begin() as connection:
        connection.execute(text("UPDATE consent_events SET event = 'granted'"))
    with pytest.raises(sqlalchemy.exc.DatabaseError), svc.db.engine.begin() as connection:
        connection.execute(text("DELETE FROM consent_events"))
    assert [e.event for e in ledger(svc)] == ["notice_sent"]


def test_notice_hash_is_the_sha256_of_its_text(svc, tenant):
    from bot.privacy.consent import active_notice

    with svc.db.session() as session:
        notice = active_notice(session, session.get(Tenant, tenant.id))
        assert notice.sha256 == hashlib.sha256(notice.text.encode("utf-8")).hexdigest()


def test_welcome_answers_only_the_contacts_own_first_message(client, svc, tenant, twilio):
    send_inbound(client, "buongiorno")
    drain(svc)
    with svc.db.session() as session:
        kinds = session.scalars(select(Message.purpose).where(Message.direction == "out")).all()
    assert kinds == ["welcome"]
