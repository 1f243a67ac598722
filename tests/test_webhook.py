"""The webhook's edge: signatures, routing, idempotency, bad input. No worker runs here."""

from __future__ import annotations

import pytest
from helpers import (
    OFFICE_NUMBER,
    PUBLIC_BASE_URL,
    add_message,
    count_messages,
    inbound_params,
    make_conversation,
    post_signed,
    sign,
)
from sqlalchemy import select

from bot.services import Services
from storage.models import Message, Tenant

WEBHOOK = "/webhooks/twilio/messages"
pytestmark = pytest.mark.usefixtures("tenant")


def handed_off(svc: Services) -> int:
    return svc.jobs.handed_off()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_valid_signature_stores_hands_off_and_answers_empty_twiml(client, svc):
    response = post_signed(client, WEBHOOK, inbound_params("C'è una perdita in cantina"))

    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.get_data(as_text=True).endswith("<Response/>")
    assert count_messages(svc, direction="in") == 1
    assert handed_off(svc) == 1


def test_stored_payload_is_encrypted_at_rest(client, svc):
    post_signed(client, WEBHOOK, inbound_params("perdita in cantina, scala B"))

    with svc.db.engine.connect() as connection:
        raw = connection.exec_driver_sql("SELECT payload FROM messages").scalar()
    assert b"perdita" not in raw
    assert b"3331234567" not in raw
    assert "perdita in cantina" in svc.cipher.decrypt(raw)


def test_invalid_signature_is_refused_and_nothing_stored(client, svc):
    params = inbound_params()
    response = client.post(
        WEBHOOK,
        data=params,
        headers={
            "X-Twilio-Signature": sign(PUBLIC_BASE_URL + WEBHOOK, params, token="not-the-token")
        },
    )

    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert count_messages(svc) == 0
    assert handed_off(svc) == 0


def test_missing_signature_is_refused(client, svc):
    response = client.post(WEBHOOK, data=inbound_params())

    assert response.status_code == 403
    assert count_messages(svc) == 0


def test_tampered_body_breaks_the_signature(client, svc):
    params = inbound_params("ciao")
    signature = sign(PUBLIC_BASE_URL + WEBHOOK, params)
    params["Body"] = "ciao, cambiato"

    response = client.post(WEBHOOK, data=params, headers={"X-Twilio-Signature": signature})

    assert response.status_code == 403
    assert count_messages(svc) == 0


def test_signature_is_checked_against_public_url_behind_a_proxy(client, svc):
    params = inbound_params()
    proxied = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "portineria.example.it",
        "Host": "10.0.0.7:8000",
    }

    # Signed for the URL Twilio called (the public one), received on an internal host.
    good = client.post(
        WEBHOOK,
        base_url="http://10.0.0.7:8000",
        data=params,
        headers={**proxied, "X-Twilio-Signature": sign(PUBLIC_BASE_URL + WEBHOOK, params)},
    )
    # Signed for the internal URL: not what Twilio signs, so it must not pass.
    internal = inbound_params()
    bad = client.post(
        WEBHOOK,
        base_url="http://10.0.0.7:8000",
        data=internal,
        headers={**proxied, "X-Twilio-Signature": sign("http://10.0.0.7:8000" + WEBHOOK, internal)},
    )

    assert good.status_code == 200
    assert bad.status_code == 403
    assert count_messages(svc) == 1


def test_unknown_to_number_answers_404(client, svc):
    response = post_signed(client, WEBHOOK, inbound_params(to="+390299999999"))

    assert response.status_code == 404
    assert count_messages(svc) == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_same_message_sid_twice_is_stored_and_handed_off_once(client, svc):
    params = inbound_params("Il cancello non si apre", sid="SM" + "a" * 32)

    first = post_signed(client, WEBHOOK, params)
    second = post_signed(client, WEBHOOK, params)

    assert (first.status_code, second.status_code) == (200, 200)
    assert count_messages(svc, direction="in") == 1
    assert handed_off(svc) == 1


def test_same_sid_for_two_tenants_is_two_messages(client, svc):
    from helpers import make_tenant

    make_tenant(svc, slug="studio-bianchi", number="+390612345678")
    post_signed(client, WEBHOOK, inbound_params(sid="SM" + "b" * 32))
    post_signed(client, WEBHOOK, inbound_params(sid="SM" + "b" * 32, to="+390612345678"))

    assert count_messages(svc, direction="in") == 2


@pytest.mark.parametrize("missing", ["MessageSid", "From", "To"])
def test_missing_required_field_answers_400(client, svc, missing):
    params = inbound_params()
    del params[missing]

    response = post_signed(client, WEBHOOK, params)

    assert response.status_code == 400
    assert missing in response.get_json()["message"]
    assert count_messages(svc) == 0


def test_non_utf8_body_answers_400(client, svc):
    raw = (
        b"MessageSid=SMx&From=whatsapp%3A%2B393331234567&To=whatsapp%3A%2B390212345678&Body=caff%E8"
    )
    response = client.post(
        WEBHOOK,
        data=raw,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": "irrelevant"},
    )

    assert response.status_code == 400
    assert response.is_json
    assert count_messages(svc) == 0


def test_raw_non_utf8_bytes_answer_400(client, svc):
    response = client.post(
        WEBHOOK, data=b"Body=\xff\xfe", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 400


def test_oversized_body_answers_413(client, svc):
    params = inbound_params("x" * (65 * 1024))

    response = post_signed(client, WEBHOOK, params)

    assert response.status_code == 413
    assert response.is_json
    assert count_messages(svc) == 0


def test_get_answers_405_json(client):
    response = client.get(WEBHOOK)

    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_garbage_media_count_answers_400(client, svc):
    response = post_signed(client, WEBHOOK, inbound_params(NumMedia="tre"))

    assert response.status_code == 400


def test_redis_down_still_stores_and_answers_200(client, svc, redis_server):
    redis_server.stop()
    try:
        response = post_signed(client, WEBHOOK, inbound_params("perdita d'acqua"))
    finally:
        redis_server.start()

    assert response.status_code == 200
    assert count_messages(svc, direction="in") == 1
    assert handed_off(svc) == 0


def test_tenant_routing_uses_number_without_channel_prefix(svc, tenant: Tenant):
    assert svc.tenants.tenant_for(OFFICE_NUMBER) == tenant.id
    assert svc.tenants.tenant_for("+390000000001") is None


# -- numbers from outside: ASCII digits only, bounded ----------------------------------

STATUS = "/webhooks/twilio/status"


@pytest.mark.parametrize("count", ["²", "٣", "-1", " 1", "1.0", "21", "99999999999999999999"])
def test_a_media_count_that_is_not_a_bounded_ascii_number_is_refused_and_not_stored(
    client, svc, count
):
    response = post_signed(client, WEBHOOK, inbound_params(NumMedia=count))

    assert response.status_code == 400
    assert response.is_json
    assert count_messages(svc) == 0
    assert handed_off(svc) == 0


def test_a_stored_message_always_has_a_media_count_the_worker_can_read(client, svc):
    from bot.conversation.inbound import InboundMessage, decode_payload

    post_signed(client, WEBHOOK, inbound_params(NumMedia="²"))
    post_signed(client, WEBHOOK, inbound_params(NumMedia="0"))

    with svc.db.session() as session:
        payloads = [m.payload for m in session.scalars(select(Message))]
    assert len(payloads) == 1
    inbound = InboundMessage.from_params(decode_payload(svc.cipher.decrypt(payloads[0])))
    assert inbound.media == ()


def _sent_message(svc: Services, tenant: Tenant) -> Message:
    conversation = make_conversation(svc, tenant, mode="bot", needs_attention=False)
    return add_message(
        svc, conversation, "Grazie", direction="out", provider_sid="SM" + "a" * 32, status="sent"
    )


@pytest.mark.parametrize("code", ["²", "٦٣٠١٦", "99999999999999999999", "63016x"])
def test_a_status_callback_with_a_malformed_error_code_answers_400_and_changes_nothing(
    client, svc, tenant, code
):
    sent = _sent_message(svc, tenant)
    params = {
        "MessageSid": sent.provider_sid,
        "MessageStatus": "failed",
        "ErrorCode": code,
        "From": f"whatsapp:{OFFICE_NUMBER}",
    }

    response = post_signed(client, STATUS, params)

    assert response.status_code == 400
    with svc.db.session() as session:
        stored = session.get(Message, sent.id)
        assert (stored.status, stored.error_code) == ("sent", None)


def test_a_status_callback_with_a_plain_error_code_is_applied(client, svc, tenant):
    sent = _sent_message(svc, tenant)
    params = {
        "MessageSid": sent.provider_sid,
        "MessageStatus": "undelivered",
        "ErrorCode": "30008",
        "From": f"whatsapp:{OFFICE_NUMBER}",
    }

    assert post_signed(client, STATUS, params).status_code == 204
    with svc.db.session() as session:
        stored = session.get(Message, sent.id)
        assert (stored.status, stored.error_code) == ("undelivered", 30008)
