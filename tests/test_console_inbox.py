"""The operator's inbox without a browser: search, unread counts, the resident's last
message, canned responses, internal notes, attachments, the 24-hour window and the
templates after it, delivery ticks, the live fragment, the next urgent conversation.
(The same in chromium: tests/test_console_inbox_browser.py.)"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from fake_twilio import FakeTwilio
from flask.testing import FlaskClient
from helpers import (
    OFFICE_NUMBER,
    add_message,
    audit_actions,
    csrf_token,
    drain,
    export_lines,
    login,
    make_contact,
    make_conversation,
    make_tenant,
    make_user,
    post_form,
    post_signed,
    records,
)
from sqlalchemy import select

from bot.console.inbox import inbox, unread_total
from bot.office.settings import update_settings
from bot.privacy.rights import erase_contact
from bot.services import Services
from notify.operators import tenant_channel
from storage.models import (
    AuditEvent,
    CannedResponse,
    InternalNote,
    MediaItem,
    Message,
    Tenant,
    Ticket,
    User,
    utcnow,
)

TEMPLATE_SID = "HX" + "ab" * 16
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
# Schema and queries of this work, on both databases.
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"


def page_of(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, path
    return response.get_data(as_text=True)


def held(svc: Services, tenant: Tenant, client: FlaskClient, **contact: Any) -> tuple[int, str]:
    """A conversation the signed-in operator has taken over; its page path."""
    conversation = make_conversation(svc, tenant, make_contact(svc, tenant, **contact))
    path = f"/console/conversations/{conversation.id}"
    post_form(client, f"{path}/takeover", page=path)
    return conversation.id, path


def form_key(client: FlaskClient, path: str, form: str = "reply-form") -> str:
    html = page_of(client, path)
    section = html[html.index(f'id="{form}"') :]
    found = re.search(r'name="form_key" value="([^"]+)"', section)
    assert found
    return found.group(1)


# -- search --------------------------------------------------------------------------------


@pytest.fixture
def three_conversations(svc: Services, tenant: Tenant) -> dict[str, int]:
    first = make_contact(svc, tenant, "+393331111111")
    second = make_contact(svc, tenant, "+393332222222")
    third = make_contact(svc, tenant, "+393333333333")
    with svc.db.session() as session:
        session.get(type(second), second.id).profile_name = "Maria Bianchi"
    a = make_conversation(svc, tenant, first)
    b = make_conversation(svc, tenant, second)
    c = make_conversation(svc, tenant, third)
    with svc.db.session() as session:
        ticket = Ticket(
            tenant_id=tenant.id,
            conversation_id=c.id,
            kind="guasto",
            status="open",
            entities=[{"label": "condominio", "text": "Condominio Città Giardino"}],
        )
        session.add(ticket)
        session.flush()
        ticket_id = ticket.id
    return {"number": a.id, "name": b.id, "building": c.id, "ticket": ticket_id}


@BOTH
@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("3331111", "number"),
        ("+39 333 111 1111", "number"),
        ("maria", "name"),
        ("BIANCHI", "name"),
        ("città giardino", "building"),
        ("Giardino", "building"),
    ],
)
def test_the_inbox_finds_a_conversation_by_number_name_or_building(
    svc, tenant, signed_in, three_conversations, query, found
):
    html = page_of(signed_in, f"/console/?q={query}")
    ids = re.findall(r'data-conversation-id="(\d+)"', html)
    assert ids == [str(three_conversations[found])]


@BOTH
def test_the_inbox_finds_a_conversation_by_its_ticket_number(
    svc, tenant, signed_in, three_conversations
):
    html = page_of(signed_in, f"/console/?q=%23{three_conversations['ticket']}")
    assert re.findall(r'data-conversation-id="(\d+)"', html) == [
        str(three_conversations["building"])
    ]


@BOTH
def test_a_search_takes_wildcards_literally_and_says_when_nothing_matches(
    svc, tenant, signed_in, three_conversations
):
    html = page_of(signed_in, "/console/?q=%25")
    assert 'data-conversation-id="' not in html
    assert "Nessuna conversazione trovata" in html


def test_the_search_never_finds_another_offices_conversations(svc, tenant, three_conversations):
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    user = make_user(svc, other, "luca@studio-bianchi.it")
    with svc.db.read() as session:
        assert inbox(session, svc.cipher, other.id, user.id, search="3331111").rows == []


# -- unread counts and the resident's last message -------------------------------------


@BOTH
def test_unread_counts_per_conversation_and_total_in_the_title_until_opened(
    svc, tenant, signed_in, operator
):
    conversation = make_conversation(svc, tenant)
    add_message(svc, conversation, "Si è rotto l'ascensore")
    add_message(svc, conversation, "Grazie, un tecnico arriverà", direction="out")
    add_message(svc, conversation, "Anche il citofono")

    html = page_of(signed_in, "/console/")
    assert f'data-conversation-id="{conversation.id}" data-unread="2"' in html
    assert "<title>(1) Conversazioni" in html  # one conversation waits to be read

    page_of(signed_in, f"/console/conversations/{conversation.id}")

    html = page_of(signed_in, "/console/")
    assert f'data-conversation-id="{conversation.id}" data-unread="0"' in html
    assert "<title>Conversazioni" in html


def test_the_unread_count_stops_at_the_cap_and_says_so(svc, tenant, signed_in, monkeypatch):
    from bot.console import inbox as inbox_module
    from bot.console import views

    monkeypatch.setattr(inbox_module, "COUNT_CAP", 2)  # where it counts
    monkeypatch.setattr(views, "COUNT_CAP", 2)  # where the page says it
    for n, text in enumerate(("Perdita", "Ancora acqua", "Sempre di più", "Aiutateci")):
        contact = make_contact(svc, tenant, f"+39333100000{n}")
        conversation = make_conversation(svc, tenant, contact)
        add_message(svc, conversation, text)
    add_message(svc, conversation, "Rispondete?")

    html = page_of(signed_in, "/console/")

    assert "<title>(2+) Conversazioni" in html
    assert 'data-unread-total="3"' in html  # the cap and one: the page script writes "2+"
    assert f'data-conversation-id="{conversation.id}" data-unread="2"' in html


def test_what_one_operator_read_stays_unread_for_a_colleague(svc, tenant, signed_in, operator):
    conversation = make_conversation(svc, tenant)
    add_message(svc, conversation, "Perdita d'acqua in garage")
    colleague = make_user(svc, tenant, "luca@studio-rossi.it")

    page_of(signed_in, f"/console/conversations/{conversation.id}")

    with svc.db.read() as session:
        assert unread_total(session, tenant.id, operator.id) == 0
        assert unread_total(session, tenant.id, colleague.id) == 1


@BOTH
def test_the_inbox_shows_the_residents_last_message_not_the_bots(svc, tenant, signed_in):
    conversation = make_conversation(svc, tenant)
    add_message(svc, conversation, "Il portone non si chiude")
    add_message(svc, conversation, "Abbiamo aperto una segnalazione.", direction="out")

    html = page_of(signed_in, "/console/")
    preview = re.search(r'<td class="preview">([^<]*)</td>', html)
    assert preview and preview.group(1) == "Il portone non si chiude"


# -- canned responses -------------------------------------------------------------------


@pytest.fixture
def admin(svc: Services, tenant: Tenant) -> User:
    return make_user(svc, tenant, "dpo@studio-rossi.it", role="admin")


@BOTH
def test_the_admin_manages_canned_responses_and_every_change_is_audited(svc, tenant, client, admin):
    login(client, admin.email)
    page = "/console/admin/canned"
    post_form(client, page, {"title": "Tecnico", "body": "Il tecnico passerà domani."}, page=page)
    with svc.db.read() as session:
        item = session.scalar(select(CannedResponse))
        assert item is not None and item.tenant_id == tenant.id
        canned_id = item.id
    post_form(
        client, f"{page}/{canned_id}", {"title": "Tecnico", "body": "Domani alle 9."}, page=page
    )
    assert "Domani alle 9." in page_of(client, page)
    post_form(client, f"{page}/{canned_id}/delete", page=page)

    with svc.db.read() as session:
        assert session.scalar(select(CannedResponse)) is None
    actions = audit_actions(svc, tenant)
    assert [a for a in actions if a.startswith("canned_response.")] == [
        "canned_response.create",
        "canned_response.update",
        "canned_response.delete",
    ]


def test_a_canned_response_title_is_unique_in_the_office(svc, tenant, client, admin):
    login(client, admin.email)
    page = "/console/admin/canned"
    post_form(client, page, {"title": "Orari", "body": "Siamo aperti 9-13."}, page=page)
    again = post_form(client, page, {"title": "Orari", "body": "Altro testo"}, page=page)
    assert "Esiste già una risposta pronta con questo titolo" in again.get_data(as_text=True)


def test_an_operator_gets_403_on_the_canned_responses_admin(svc, tenant, signed_in, admin):
    with svc.db.session() as session:
        session.add(CannedResponse(tenant_id=tenant.id, title="Orari", body="9-13"))
    with svc.db.read() as session:
        canned_id = session.scalar(select(CannedResponse.id))
    assert signed_in.get("/console/admin/canned").status_code == 403
    token = csrf_token(signed_in, "/console/")
    for path in ("/console/admin/canned", f"/console/admin/canned/{canned_id}/delete"):
        assert signed_in.post(path, data={"csrf_token": token}).status_code == 403


def test_the_offices_canned_responses_are_offered_in_the_reply(svc, tenant, signed_in):
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    with svc.db.session() as session:
        session.add(CannedResponse(tenant_id=tenant.id, title="Orari", body="Siamo aperti 9-13."))
        session.add(CannedResponse(tenant_id=other.id, title="Altrui", body="Non nostro."))
    _, path = held(svc, tenant, signed_in)

    html = page_of(signed_in, path)
    assert '<option value="Siamo aperti 9-13.">Orari</option>' in html
    assert "Non nostro." not in html


# -- internal notes ---------------------------------------------------------------------


def test_an_internal_note_is_kept_shown_and_never_sent_to_twilio(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    conversation_id, path = held(svc, tenant, signed_in)

    response = post_form(signed_in, f"{path}/notes", {"note": "Il signore è sordo: scrivere."})
    drain(svc)

    html = response.get_data(as_text=True)
    assert "Nota interna salvata" in html
    assert "Il signore è sordo: scrivere." in html and "non inviata al contatto" in html
    assert twilio.messages == []
    with svc.db.read() as session:
        assert session.scalar(select(Message).where(Message.direction == "out")) is None
        note = session.scalar(select(InternalNote))
        assert note is not None and note.conversation_id == conversation_id
        assert b"sordo" not in note.body  # encrypted at rest
        audit = session.scalar(select(AuditEvent).where(AuditEvent.action == "conversation.note"))
        assert audit is not None and "sordo" not in str(audit.detail)


@BOTH
def test_notes_are_in_the_offices_export_not_the_residents_and_go_with_erasure(
    svc, tenant, signed_in
):
    _, path = held(svc, tenant, signed_in, phone="+393339999999")
    post_form(signed_in, f"{path}/notes", {"note": "Chiamare dopo le 18."})
    with svc.db.read() as session:
        contact_id = session.scalar(select(InternalNote.contact_id))

    office = export_lines(svc, tenant)
    resident = export_lines(svc, tenant, contact_id)
    assert [n["body"] for n in records(office, "internal_note")] == ["Chiamare dopo le 18."]
    assert "Chiamare dopo" not in str(resident)

    removed = erase_contact(svc, tenant, "+393339999999", actor="test")
    assert removed["internal_notes"] == 1
    with svc.db.read() as session:
        assert session.scalar(select(InternalNote)) is None


# -- attachments ------------------------------------------------------------------------


def send_file(client: FlaskClient, path: str, content: bytes, name: str, body: str = "") -> str:
    from io import BytesIO

    response = client.post(
        f"{path}/reply",
        data={
            "csrf_token": csrf_token(client, path),
            "form_key": form_key(client, path),
            "body": body,
            "attachment": (BytesIO(content), name),
        },
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    return str(response.get_data(as_text=True))


@BOTH
def test_an_attachment_reaches_twilio_as_a_signed_media_url_serving_the_file(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    _, path = held(svc, tenant, signed_in)

    html = send_file(signed_in, path, PDF, "verbale.pdf", body="Il verbale")
    assert "Messaggio in invio" in html
    drain(svc)

    (sent,) = twilio.messages
    assert sent["Body"] == "Il verbale"
    (url,) = sent["MediaUrl"]
    assert url.startswith("https://portineria.example.it/media/")
    served = signed_in.application.test_client().get(urlsplit(url).path)  # no session
    assert served.status_code == 200
    assert served.data == PDF and served.mimetype == "application/pdf"
    with svc.db.read() as session:
        item = session.scalar(select(MediaItem))
        assert item is not None and item.size == len(PDF)
        with open(item.path, "rb") as stored:
            assert PDF not in stored.read()  # encrypted at rest


def test_a_tampered_media_url_is_404(svc, tenant, signed_in, twilio: FakeTwilio):
    _, path = held(svc, tenant, signed_in)
    send_file(signed_in, path, PNG, "foto.png")
    drain(svc)
    url = urlsplit(twilio.messages[0]["MediaUrl"][0]).path
    anonymous = signed_in.application.test_client()
    assert anonymous.get(url[:-3] + "abc").status_code == 404
    assert anonymous.get("/media/1").status_code == 404


@pytest.mark.parametrize("app_config_extra", [{"ATTACHMENT_URL_SECONDS": 1}], indirect=True)
def test_a_media_url_expires(svc, tenant, signed_in, twilio: FakeTwilio):
    _, path = held(svc, tenant, signed_in)
    send_file(signed_in, path, PNG, "foto.png")
    drain(svc)
    url = urlsplit(twilio.messages[0]["MediaUrl"][0]).path
    time.sleep(2.1)
    assert signed_in.application.test_client().get(url).status_code == 404


def test_an_attachment_of_another_kind_is_refused_before_anything_is_stored(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    _, path = held(svc, tenant, signed_in)
    html = send_file(signed_in, path, b"MZ\x90\x00 not a picture", "foto.png")
    drain(svc)
    assert "Si possono allegare solo foto (JPEG, PNG) e documenti PDF" in html
    assert twilio.messages == []
    with svc.db.read() as session:
        assert session.scalar(select(MediaItem)) is None


def test_an_attachment_outside_the_window_is_refused_by_the_gate(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    _, path = held(svc, tenant, signed_in)
    _age_window(svc, tenant, hours=25)
    html = send_file(signed_in, path, PNG, "foto.png")
    drain(svc)
    assert "Messaggio non inviato" in html
    assert twilio.messages == []
    with svc.db.read() as session:
        assert session.scalar(select(MediaItem)) is None


# -- the 24-hour window and the templates -----------------------------------------------


def _age_window(svc: Services, tenant: Tenant, hours: float) -> None:
    from storage.models import Contact

    with svc.db.session() as session:
        for contact in session.scalars(select(Contact).where(Contact.tenant_id == tenant.id)):
            contact.last_inbound_at = utcnow() - timedelta(hours=hours)


def test_the_window_counts_down_while_it_is_open(svc, tenant, signed_in):
    _, path = held(svc, tenant, signed_in)
    _age_window(svc, tenant, hours=20.5)
    html = page_of(signed_in, path)
    assert re.search(r'id="window-left">3 h 2\d min<', html)
    assert re.search(r'<form [^>]*id="template-form" hidden', html)


def test_after_24_hours_the_approved_templates_are_offered_and_one_goes_to_twilio(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    update_settings(
        svc,
        tenant.id,
        {"approved_templates": [{"name": "Richiamo", "content_sid": TEMPLATE_SID}]},
        actor="test",
    )
    _, path = held(svc, tenant, signed_in)
    _age_window(svc, tenant, hours=25)

    html = page_of(signed_in, path)
    assert "Finestra di 24 ore chiusa" in html
    assert re.search(r'<form [^>]*id="reply-form"[^>]* hidden', html)
    assert f'<option value="{TEMPLATE_SID}">Richiamo</option>' in html

    response = signed_in.post(
        f"{path}/template",
        data={
            "csrf_token": csrf_token(signed_in, path),
            "form_key": form_key(signed_in, path, "template-form"),
            "content_sid": TEMPLATE_SID,
            "var1": "Maria",
        },
        follow_redirects=True,
    )
    assert "Messaggio in invio" in response.get_data(as_text=True)
    drain(svc)

    (sent,) = twilio.messages
    assert sent["ContentSid"] == TEMPLATE_SID and '"1": "Maria"' in sent["ContentVariables"]
    assert "Body" not in sent or not sent["Body"]
    assert "Modello approvato: Richiamo" in page_of(signed_in, path)
    assert "conversation.template" in audit_actions(svc, tenant)


def test_a_template_the_office_did_not_approve_is_refused(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    _, path = held(svc, tenant, signed_in)
    _age_window(svc, tenant, hours=25)
    response = post_form(
        signed_in, f"{path}/template", {"content_sid": TEMPLATE_SID, "form_key": "k" * 16}
    )
    drain(svc)
    assert "Scegli uno dei modelli approvati" in response.get_data(as_text=True)
    assert twilio.messages == []


# -- delivery ticks, the live fragment, the next urgent conversation ----------------------


@pytest.mark.parametrize(
    ("status", "code", "tick", "text"),
    [
        ("sent", None, "✓", "inviato"),
        ("delivered", None, "✓✓", "consegnato"),
        ("read", None, "✓✓", "letto"),
        ("failed", 63016, "✗", "Fuori dalla finestra di 24 ore"),
        ("undelivered", 63024, "✗", "Destinatario non valido per WhatsApp"),
        ("failed", 12345, "✗", "Errore 12345 di Twilio"),
    ],
)
def test_each_sent_message_shows_its_delivery_tick_and_the_error_in_italian(
    svc, tenant, signed_in, status, code, tick, text
):
    conversation = make_conversation(svc, tenant)
    add_message(svc, conversation, "Ricevuto", direction="out", status=status, error_code=code)
    html = page_of(signed_in, f"/console/conversations/{conversation.id}")
    delivery = re.search(r'<p class="delivery">(.*?)</p>', html, re.S)
    assert delivery and tick in delivery.group(1) and text in delivery.group(1)


def test_the_live_fragment_carries_the_new_messages_and_not_the_reply_form(svc, tenant, signed_in):
    conversation_id, path = held(svc, tenant, signed_in)
    with svc.db.read() as session:
        from storage.models import Conversation

        thread = session.get(Conversation, conversation_id)
        assert thread is not None
    add_message(svc, thread, "Ultim'ora: anche il secondo piano")

    html = page_of(signed_in, f"{path}/live")
    assert "Ultim&#39;ora: anche il secondo piano" in html
    assert 'data-part="live-thread"' in html and 'data-part="live-head"' in html
    assert "reply-body" not in html
    with svc.db.read() as session:
        assert unread_total(session, tenant.id, thread.assigned_user_id or 0) == 0


def test_next_goes_to_the_urgent_conversation_first_then_the_longest_wait(svc, tenant, signed_in):
    now = utcnow()
    older = make_conversation(
        svc,
        tenant,
        make_contact(svc, tenant, "+393330000001"),
        human_since=now - timedelta(hours=2),
    )
    urgent = make_conversation(
        svc, tenant, make_contact(svc, tenant, "+393330000002"), priority="urgent"
    )
    make_conversation(
        svc, tenant, make_contact(svc, tenant, "+393330000003"), needs_attention=False
    )

    first = signed_in.get("/console/next")
    assert first.headers["Location"].endswith(f"/console/conversations/{urgent.id}")
    second = signed_in.get(f"/console/next?dopo={urgent.id}")
    assert second.headers["Location"].endswith(f"/console/conversations/{older.id}")


def test_a_status_callback_tells_the_offices_consoles_so_the_ticks_move(svc, tenant, client):
    conversation = make_conversation(svc, tenant)
    sent = add_message(svc, conversation, "Ok", direction="out", status="sent", provider_sid="SM9")
    channels = (tenant_channel(tenant.slug),)
    cursor = svc.notifier.read(channels, None).cursor

    params = {"MessageSid": "SM9", "MessageStatus": "read", "From": f"whatsapp:{OFFICE_NUMBER}"}
    assert post_signed(client, "/webhooks/twilio/status", params).status_code == 204

    (event,) = svc.notifier.read(channels, cursor).events
    assert event["event"] == "message.status"
    assert event["data"] == {
        "conversation_id": conversation.id,
        "message_id": sent.id,
        "status": "read",
    }


def test_a_live_refresh_with_nothing_new_is_not_another_view_in_the_audit_trail(
    svc, tenant, signed_in
):
    conversation_id, path = held(svc, tenant, signed_in)
    with svc.db.read() as session:
        from storage.models import Conversation

        thread = session.get(Conversation, conversation_id)
    page_of(signed_in, f"{path}/live")
    views = audit_actions(svc, tenant).count("conversation.view")

    page_of(signed_in, f"{path}/live")  # a tick, a colleague's move: nothing new
    assert audit_actions(svc, tenant).count("conversation.view") == views

    add_message(svc, thread, "Un'altra cosa")
    page_of(signed_in, f"{path}/live")
    assert audit_actions(svc, tenant).count("conversation.view") == views + 1


@pytest.mark.parametrize("app_config_extra", [{"ATTACHMENT_MAX_BYTES": 1024}], indirect=True)
def test_an_attachment_over_the_limit_is_refused_in_italian(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    _, path = held(svc, tenant, signed_in)
    html = send_file(signed_in, path, PNG + b"\x00" * 2048, "foto.png")
    drain(svc)
    assert "L'allegato è troppo grande (al massimo 1 KB)" in html.replace("&#39;", "'")
    assert twilio.messages == []


def test_an_attachment_larger_than_a_webhook_passes_the_body_limit(
    svc, tenant, signed_in, twilio: FakeTwilio
):
    _, path = held(svc, tenant, signed_in)
    big = PDF + b"0" * (200 * 1024)  # the app's own limit is 64 KiB
    assert "Messaggio in invio" in send_file(signed_in, path, big, "verbale.pdf")
    drain(svc)
    assert len(twilio.messages) == 1
