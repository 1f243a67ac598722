"""The operator console: sign-in, roles, tenants, handoff rules, replies through the
gate, tickets, admin logs, real-time events (Pusher and the app's own stream), audit."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from fake_pusher import FakePusher
from flask.testing import FlaskClient
from helpers import (
    PASSWORD,
    RESIDENT,
    actor_for,
    add_message,
    audit_actions,
    csrf_token,
    drain,
    login,
    make_contact,
    make_conversation,
    make_tenant,
    make_ticket,
    make_user,
    post_form,
    reload,
    send_inbound,
)
from sqlalchemy import delete, select, update

from bot.console.inbox import inbox
from bot.conversation import handoff
from bot.exceptions import NotFound, Refused
from bot.office.demo import seed_demo_operator
from bot.privacy.audit import MAX_PROBLEMS, record_audit, verify_chain
from bot.services import Services
from notify.operators import OperatorEvent, tenant_channel, user_channel
from storage.models import (
    AuditEvent,
    Message,
    Tenant,
    Ticket,
    User,
    utcnow,
)

OTHER_NUMBER = "+390698765432"


# -- fixtures and factories -------------------------------------------------------------


@pytest.fixture
def app_config(app_config: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """Tests that use ``pusher_fake`` run with Pusher pointed at it; the others without."""
    if "pusher_fake" in request.fixturenames:
        fake: FakePusher = request.getfixturevalue("pusher_fake")
        app_config.update(
            PUSHER_APP_ID=fake.app_id,
            PUSHER_KEY=fake.key,
            PUSHER_SECRET=fake.secret,
            PUSHER_HOST=fake.host,
            PUSHER_PORT=fake.port,
            PUSHER_SSL="false",
        )
    return app_config


@pytest.fixture
def other_tenant(svc: Services) -> Tenant:
    return make_tenant(svc, slug="studio-bianchi", number=OTHER_NUMBER)


# -- sign-in, CSRF, roles (the limits and sessions: test_console_auth.py) --------------


def test_every_console_page_needs_login(client: FlaskClient):
    response = client.get("/console/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/login")
    assert client.get("/console/inbox/list").status_code == 401
    assert client.get("/console/admin/audit").status_code == 302
    assert client.get("/console/events").status_code == 401


def test_login_succeeds_and_is_audited(client, svc, tenant, operator):
    response = login(client, operator.email)

    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"
    page = client.get("/console/").get_data(as_text=True)
    assert "Conversazioni" in page and operator.email in page
    with svc.db.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "login"))
        assert event.user_id == operator.id and event.ip == "127.0.0.1"


def test_wrong_password_is_refused_in_italian_and_audited(client, svc, tenant, operator):
    response = login(client, operator.email, "sbagliata-sbagliata")

    assert response.status_code == 401
    assert "Email o password non validi" in response.get_data(as_text=True)
    with svc.db.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "login.failed"))
        assert event.user_id == operator.id and event.detail == {"reason": "bad_password"}


def test_forms_without_csrf_token_are_refused(client, svc, tenant, operator):
    response = client.post("/console/login", data={"email": operator.email, "password": PASSWORD})
    assert response.status_code == 302  # back to the login form, with the reason
    assert audit_actions(svc, tenant) == []

    login(client, operator.email)
    conversation = make_conversation(svc, tenant)
    refused = client.post(f"/console/conversations/{conversation.id}/takeover")
    assert refused.status_code == 400
    assert "Il modulo è scaduto" in refused.get_data(as_text=True)
    assert reload(svc, conversation).assigned_user_id is None


def test_webhooks_and_api_need_no_csrf_token(client, tenant):
    send_inbound(client, "Buongiorno")  # asserts 200
    response = client.post("/api/v1/messages", json={"to": RESIDENT, "body": "ciao"})
    assert response.status_code == 401  # the token check, not CSRF
    assert response.get_json()["error"] == "unauthorized"


def test_login_never_redirects_off_site(client, operator):
    token = csrf_token(client)
    response = client.post(
        "/console/login?next=https://evil.example/console",
        data={"csrf_token": token, "email": operator.email, "password": PASSWORD},
    )
    assert response.headers["Location"] == "/console/"


def test_logout_is_audited_and_ends_the_session(signed_in, svc, tenant):
    response = post_form(signed_in, "/console/logout")
    assert "Sei uscito" in response.get_data(as_text=True)
    assert audit_actions(svc, tenant)[-1] == "logout"
    assert signed_in.get("/console/").status_code == 302


def test_admin_pages_are_forbidden_to_operators(signed_in):
    assert signed_in.get("/console/admin/audit").status_code == 403
    assert signed_in.get("/console/admin/bot-log").status_code == 403


def test_admin_sees_the_audit_log_with_filters(client, svc, tenant, operator):
    admin = make_user(svc, tenant, "capo@studio-rossi.it", role="admin")
    login(client, operator.email, "sbagliata-sbagliata")
    login(client, admin.email)

    page = client.get("/console/admin/audit?azione=login.failed").get_data(as_text=True)
    assert "login.failed" in page and "bad_password" in page
    only_admin = client.get(f"/console/admin/audit?utente={admin.id}&azione=login.failed")
    assert "bad_password" not in only_admin.get_data(as_text=True)
    bad_filter = client.get("/console/admin/audit?dal=ieri&utente=x")
    assert bad_filter.status_code == 200
    assert "non è una data valida" in bad_filter.get_data(as_text=True)
    assert "audit_log.view" in audit_actions(svc, tenant)


def test_admin_sees_the_bot_log_filtered_by_intent_and_confidence(client, svc, tenant):
    from storage.models import BotLogEntry

    admin = make_user(svc, tenant, "capo@studio-rossi.it", role="admin")
    with svc.db.session() as session:
        session.add_all(
            [
                BotLogEntry(tenant_id=tenant.id, intent="guasto", confidence=0.91, action="ticket"),
                BotLogEntry(
                    tenant_id=tenant.id, intent="altro", confidence=0.31, action="clarification"
                ),
            ]
        )
    login(client, admin.email)

    low = client.get("/console/admin/bot-log?confidenza_max=0,5").get_data(as_text=True)
    assert "clarification" in low and "ticket</td>" not in low
    guasto = client.get("/console/admin/bot-log?intento=guasto").get_data(as_text=True)
    assert "91%" in guasto and "clarification" not in guasto


# -- tenant isolation -------------------------------------------------------------------


def test_another_offices_ids_answer_404(signed_in, svc, other_tenant):
    foreign = make_conversation(svc, other_tenant, make_contact(svc, other_tenant))
    with svc.db.session() as session:
        ticket = Ticket(
            tenant_id=other_tenant.id, conversation_id=foreign.id, kind="guasto", status="open"
        )
        session.add(ticket)

    assert signed_in.get(f"/console/conversations/{foreign.id}").status_code == 404
    for move in ("takeover", "release", "close", "reply", "assign"):
        response = signed_in.post(
            f"/console/conversations/{foreign.id}/{move}",
            data={"csrf_token": csrf_token(signed_in, "/console/"), "body": "x", "user_id": "1"},
        )
        assert response.status_code == 404, move
    assert signed_in.get(f"/console/tickets/{ticket.id}").status_code == 404
    assert reload(svc, foreign).assigned_user_id is None
    assert "studio-bianchi" not in signed_in.get("/console/").get_data(as_text=True)


def test_a_colleague_of_another_office_cannot_be_assigned(svc, tenant, operator, other_tenant):
    stranger = make_user(svc, other_tenant, "mario@studio-bianchi.it")
    conversation = make_conversation(svc, tenant)

    with pytest.raises(Refused, match="Collega non trovato"), svc.db.session() as session:
        handoff.assign(session, actor_for(operator), conversation.id, stranger.id, utcnow())


# -- numbers from outside: ASCII digits only, bounded ----------------------------------

HUGE_ID = "1" * 25


@pytest.mark.parametrize(
    "path",
    [
        f"/console/conversations/{HUGE_ID}",
        "/console/conversations/9223372036854775808",
        "/console/conversations/0",
        "/console/conversations/\u0661",
        f"/console/tickets/{HUGE_ID}",
    ],
)
def test_a_path_id_that_is_not_a_bounded_ascii_number_is_404(signed_in, svc, tenant, path):
    make_conversation(svc, tenant)  # conversation 1 exists: Arabic-Indic "1" must not reach it

    assert signed_in.get(path).status_code == 404


@pytest.mark.parametrize("move", ["takeover", "release", "close", "reply", "assign"])
def test_a_move_on_a_25_digit_conversation_id_is_404(signed_in, move):
    response = signed_in.post(
        f"/console/conversations/{HUGE_ID}/{move}",
        data={"csrf_token": csrf_token(signed_in, "/console/"), "body": "x", "user_id": "1"},
    )

    assert response.status_code == 404


def test_a_ticket_status_change_on_a_25_digit_id_is_404(signed_in):
    response = signed_in.post(
        f"/console/tickets/{HUGE_ID}/status",
        data={"csrf_token": csrf_token(signed_in, "/console/"), "status": "done"},
    )

    assert response.status_code == 404


@pytest.mark.parametrize("user_id", ["abc", "\u00b2", "\u0661", HUGE_ID, "-1", "0", "1.0", ""])
def test_assigning_to_a_colleague_id_that_is_not_a_number_is_refused_clearly(
    signed_in, svc, tenant, operator, user_id
):
    conversation = make_conversation(svc, tenant)
    page = f"/console/conversations/{conversation.id}"

    answer = post_form(signed_in, f"{page}/assign", {"user_id": user_id}, page=page)

    assert answer.status_code == 200
    assert "Collega non valido" in answer.get_data(as_text=True)
    assert reload(svc, conversation).assigned_user_id is None
    assert "conversation.assign" not in audit_actions(svc, tenant)


@pytest.mark.parametrize("user_id", ["\u00b2", "\u0661", HUGE_ID, "9223372036854775808"])
def test_an_audit_filter_on_a_user_id_that_is_not_a_number_is_dropped_with_a_note(
    client, svc, tenant, user_id
):
    admin = make_user(svc, tenant, "capo@studio-rossi.it", role="admin")
    login(client, admin.email)

    page = client.get("/console/admin/audit", query_string={"utente": user_id})

    assert page.status_code == 200
    assert "Valore di utente non valido" in page.get_data(as_text=True)
    assert "capo@studio-rossi.it" in page.get_data(as_text=True)  # the filter was dropped


# -- inbox ------------------------------------------------------------------------------


def test_inbox_puts_attention_first_urgent_on_top_then_the_longest_wait(svc, tenant, operator):
    now = utcnow()
    contacts = [make_contact(svc, tenant, f"+39333000000{i}") for i in range(4)]
    quiet = make_conversation(
        svc,
        tenant,
        contacts[0],
        mode="bot",
        needs_attention=False,
        human_since=None,
        last_message_at=now,
    )
    recent = make_conversation(svc, tenant, contacts[1], human_since=now - timedelta(minutes=2))
    old = make_conversation(svc, tenant, contacts[2], human_since=now - timedelta(minutes=20))
    urgent = make_conversation(
        svc, tenant, contacts[3], priority="urgent", human_since=now - timedelta(minutes=1)
    )

    with svc.db.session() as session:
        rows = inbox(session, svc.cipher, tenant.id, operator.id).rows

    assert [r.id for r in rows] == [urgent.id, old.id, recent.id, quiet.id]


def test_inbox_filters_and_counts(signed_in, svc, tenant, operator):
    contacts = [make_contact(svc, tenant, f"+39333000001{i}") for i in range(4)]
    make_conversation(svc, tenant, contacts[0], assigned_user_id=operator.id, needs_attention=False)
    make_conversation(svc, tenant, contacts[1])
    make_conversation(svc, tenant, contacts[2], mode="bot", needs_attention=False)
    make_conversation(svc, tenant, contacts[3], status="closed", mode="bot", needs_attention=False)

    page = signed_in.get("/console/").get_data(as_text=True)
    counts = dict(re.findall(r'data-filter="(\w+)">[^<]*<span class="count">(\d+)', page))
    assert counts == {
        "open": "3",
        "mine": "1",
        "unassigned": "1",
        "bot": "1",
        "human": "2",
        "closed": "1",
    }
    mine = signed_in.get("/console/inbox/list?filtro=mine").get_data(as_text=True)
    assert mine.count("data-conversation-id") == 1
    assert signed_in.get("/console/?filtro=<script>").status_code == 200


def test_inbox_and_conversation_render_bodies_as_text(signed_in, svc, tenant):
    conversation = make_conversation(svc, tenant)
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    add_message(svc, conversation, hostile)

    for path in ("/console/", f"/console/conversations/{conversation.id}"):
        page = signed_in.get(path).get_data(as_text=True)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script>alert" not in page and "<img src=x" not in page


def test_conversation_view_shows_the_history_and_is_audited(signed_in, svc, tenant, operator):
    contact = make_contact(svc, tenant, legal_basis="contract", consent="withdrawn")
    conversation = make_conversation(svc, tenant, contact)
    inbound = add_message(
        svc,
        conversation,
        "Perdita in cantina, via Roma 3",
        intent="guasto",
        confidence=0.87,
        sensitive_kinds=["health"],
        redacted=True,
    )
    add_message(
        svc,
        conversation,
        "Grazie, apriamo una segnalazione.",
        direction="out",
        purpose="reply",
        status="failed",
        error_code=63016,
    )
    with svc.db.session() as session:
        session.add(
            Ticket(
                tenant_id=tenant.id,
                conversation_id=conversation.id,
                source_message_id=inbound.id,
                kind="guasto",
                intent="guasto",
                status="open",
                entities=[{"label": "ADDRESS", "text": "via Roma 3", "start": 19, "end": 29}],
            )
        )

    page = signed_in.get(f"/console/conversations/{conversation.id}").get_data(as_text=True)

    for expected in (
        "Perdita in cantina",
        "ricevuto",
        "inviato",
        "guasto",
        "87%",
        "dati sanitari",
        "testo oscurato",
        "non consegnato",
        "errore 63016",
        "indirizzo: via Roma 3",
        "consenso revocato",
        "contratto",
        "#1 guasto",
    ):
        assert expected in page, expected
    with svc.db.session() as session:
        viewed = session.scalar(select(AuditEvent).where(AuditEvent.action == "conversation.view"))
        assert (viewed.user_id, viewed.target_id) == (operator.id, str(conversation.id))


# -- handoff rules (no HTTP) ------------------------------------------------------------


def test_two_simultaneous_takeovers_exactly_one_wins(svc, tenant, operator):
    colleague = make_user(svc, tenant, "bruno@studio-rossi.it")
    conversation = make_conversation(svc, tenant)
    start = threading.Barrier(2)
    results: dict[int, handoff.Takeover] = {}

    def take(user: User) -> None:
        start.wait()
        with svc.db.session() as session:
            results[user.id] = handoff.takeover(session, actor_for(user), conversation.id, utcnow())

    threads = [threading.Thread(target=take, args=(u,)) for u in (operator, colleague)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    winners = [uid for uid, result in results.items() if result.won]
    assert len(results) == 2 and len(winners) == 1
    loser = next(r for uid, r in results.items() if uid not in winners)
    assert "già stata presa in carico" in loser.message
    stored = reload(svc, conversation)
    assert stored.assigned_user_id == winners[0] and stored.mode == "human"
    assert not stored.needs_attention
    assert audit_actions(svc, tenant).count("conversation.takeover") == 1


def test_takeover_of_a_bot_conversation_silences_the_bot(svc, tenant, operator):
    conversation = make_conversation(
        svc, tenant, mode="bot", needs_attention=False, human_since=None
    )
    with svc.db.session() as session:
        result = handoff.takeover(session, actor_for(operator), conversation.id, utcnow())
    assert result.won
    assert reload(svc, conversation).mode == "human"


def test_release_gives_the_conversation_back_to_the_bot(svc, tenant, operator):
    conversation = make_conversation(
        svc, tenant, priority="urgent", needs_attention=False, assigned_user_id=operator.id
    )
    with svc.db.session() as session:
        move = handoff.release(session, actor_for(operator), conversation.id)

    stored = reload(svc, conversation)
    assert (stored.mode, stored.assigned_user_id, stored.priority) == ("bot", None, "normal")
    assert move.events and move.events[0].name == "conversation.updated"
    assert audit_actions(svc, tenant) == ["conversation.release"]


def test_only_the_holder_or_an_admin_may_release_or_close(svc, tenant, operator):
    colleague = make_user(svc, tenant, "bruno@studio-rossi.it")
    admin = make_user(svc, tenant, "capo@studio-rossi.it", role="admin")
    conversation = make_conversation(
        svc, tenant, assigned_user_id=colleague.id, needs_attention=False
    )

    with pytest.raises(Refused, match="in carico a un collega"), svc.db.session() as session:
        handoff.release(session, actor_for(operator), conversation.id)
    with pytest.raises(Refused, match="in carico a un collega"), svc.db.session() as session:
        handoff.close(session, actor_for(operator), conversation.id)
    with svc.db.session() as session:
        handoff.close(session, actor_for(admin), conversation.id)
    assert reload(svc, conversation).status == "closed"


def test_close_ends_the_conversation_and_keeps_who_handled_it(svc, tenant, operator):
    conversation = make_conversation(
        svc, tenant, assigned_user_id=operator.id, needs_attention=False
    )
    with svc.db.session() as session:
        handoff.close(session, actor_for(operator), conversation.id)
    stored = reload(svc, conversation)
    assert (stored.status, stored.mode, stored.assigned_user_id) == ("closed", "bot", operator.id)
    with pytest.raises(Refused, match="chiusa"), svc.db.session() as session:
        handoff.takeover(session, actor_for(operator), conversation.id, utcnow())


def test_assign_to_a_colleague_notifies_them(svc, tenant, operator):
    colleague = make_user(svc, tenant, "bruno@studio-rossi.it")
    conversation = make_conversation(svc, tenant)
    with svc.db.session() as session:
        move = handoff.assign(session, actor_for(operator), conversation.id, colleague.id, utcnow())

    stored = reload(svc, conversation)
    assert (stored.assigned_user_id, stored.mode) == (colleague.id, "human")
    assert any(
        e.channels == (user_channel(colleague.id),) and e.name == "conversation.assigned"
        for e in move.events
    )
    with svc.db.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "conversation.assign"))
        assert event.detail == {"to_user_id": colleague.id}


def test_unknown_conversation_is_not_found(svc, tenant, operator):
    with pytest.raises(NotFound), svc.db.session() as session:
        handoff.takeover(session, actor_for(operator), 999_999, utcnow())


def test_idle_conversations_go_back_to_the_bot_after_the_timeout(svc, tenant, operator):
    now = utcnow()
    long_ago = now - timedelta(minutes=31)
    contacts = [make_contact(svc, tenant, f"+39333000002{i}") for i in range(4)]
    idle = make_conversation(
        svc,
        tenant,
        contacts[0],
        assigned_user_id=operator.id,
        needs_attention=False,
        human_since=long_ago,
        last_message_at=long_ago,
    )
    busy = make_conversation(
        svc,
        tenant,
        contacts[1],
        assigned_user_id=operator.id,
        needs_attention=False,
        human_since=long_ago,
        last_message_at=now - timedelta(minutes=5),
    )
    replied = make_conversation(
        svc,
        tenant,
        contacts[2],
        assigned_user_id=operator.id,
        needs_attention=False,
        human_since=long_ago,
        last_message_at=long_ago,
    )
    add_message(svc, replied, "Arriviamo subito", direction="out", purpose="operator")
    waiting = make_conversation(
        svc, tenant, contacts[3], human_since=long_ago, last_message_at=long_ago
    )

    assert handoff.release_idle_conversations(svc, now) == 1

    assert reload(svc, idle).mode == "bot" and reload(svc, idle).assigned_user_id is None
    assert [reload(svc, c).mode for c in (busy, replied, waiting)] == ["human"] * 3
    assert audit_actions(svc, tenant) == ["conversation.auto_release"]
    assert handoff.release_idle_conversations(svc, now) == 0


def test_idle_timeout_is_configurable(svc, tenant, operator):
    svc.config["HUMAN_MODE_TIMEOUT_MINUTES"] = 5
    moment = utcnow() - timedelta(minutes=6)
    make_conversation(
        svc,
        tenant,
        assigned_user_id=operator.id,
        needs_attention=False,
        human_since=moment,
        last_message_at=moment,
    )
    assert handoff.release_idle_conversations(svc, utcnow()) == 1


# -- moves over HTTP --------------------------------------------------------------------


def test_second_operator_is_told_the_conversation_was_taken(client, app, svc, tenant, operator):
    colleague = make_user(svc, tenant, "bruno@studio-rossi.it")
    conversation = make_conversation(svc, tenant)
    other = app.test_client()
    login(client, operator.email)
    login(other, colleague.email)
    page = f"/console/conversations/{conversation.id}"
    first_token, second_token = csrf_token(client, page), csrf_token(other, page)

    first = client.post(f"{page}/takeover", data={"csrf_token": first_token}, follow_redirects=True)
    second = other.post(
        f"{page}/takeover", data={"csrf_token": second_token}, follow_redirects=True
    )

    assert "Hai preso in carico" in first.get_data(as_text=True)
    assert "già stata presa in carico da anna@studio-rossi.it" in second.get_data(as_text=True)
    assert reload(svc, conversation).assigned_user_id == operator.id


def test_reply_goes_through_the_gate_and_the_worker_to_twilio(
    app, signed_in, svc, tenant, twilio, operator
):
    conversation = make_conversation(svc, tenant)
    page = f"/console/conversations/{conversation.id}"
    post_form(signed_in, f"{page}/takeover", page=page)

    token = csrf_token(signed_in, page)
    form_key = re.search(
        r'name="form_key" value="([^"]+)"', signed_in.get(page).get_data(as_text=True)
    ).group(1)
    for _ in range(2):  # a double submit sends once
        response = signed_in.post(
            f"{page}/reply",
            data={"csrf_token": token, "form_key": form_key, "body": "Arriva il tecnico alle 15."},
            follow_redirects=True,
        )
    assert "Messaggio in invio" in response.get_data(as_text=True)
    drain(svc)

    assert [m["Body"] for m in twilio.messages] == ["Arriva il tecnico alle 15."]
    with svc.db.session() as session:
        sent = session.scalar(select(Message).where(Message.purpose == "operator"))
        assert sent.sender_user_id == operator.id and sent.status == "queued"
    assert "conversation.reply" in audit_actions(svc, tenant)


def test_reply_refused_by_the_gate_is_explained_in_italian(app, signed_in, svc, tenant, twilio):
    contact = make_contact(svc, tenant, consent="withdrawn")
    conversation = make_conversation(svc, tenant, contact)
    page = f"/console/conversations/{conversation.id}"
    post_form(signed_in, f"{page}/takeover", page=page)

    response = post_form(
        signed_in, f"{page}/reply", {"body": "Buongiorno", "form_key": "k" * 16}, page=page
    )

    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "Messaggio non inviato" in text and "ha revocato il consenso" in text
    drain(svc)
    assert twilio.messages == []
    assert "conversation.reply_refused" in audit_actions(svc, tenant)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("   ", "Scrivi un messaggio"),
        ("x" * 4097, "troppo lungo"),
    ],
)
def test_reply_input_problems_are_explained(signed_in, svc, tenant, body, expected):
    conversation = make_conversation(svc, tenant)
    page = f"/console/conversations/{conversation.id}"
    post_form(signed_in, f"{page}/takeover", page=page)
    response = post_form(signed_in, f"{page}/reply", {"body": body}, page=page)
    assert response.status_code == 200 and expected in response.get_data(as_text=True)


def test_reply_without_takeover_is_refused(signed_in, svc, tenant):
    conversation = make_conversation(svc, tenant)
    page = f"/console/conversations/{conversation.id}"
    response = post_form(signed_in, f"{page}/reply", {"body": "ciao"}, page=page)
    assert "Prendi in carico la conversazione" in response.get_data(as_text=True)


def test_release_assign_and_close_over_http(app, signed_in, svc, tenant, operator):
    colleague = make_user(svc, tenant, "bruno@studio-rossi.it")
    conversation = make_conversation(svc, tenant)
    page = f"/console/conversations/{conversation.id}"

    post_form(signed_in, f"{page}/takeover", page=page)
    released = post_form(signed_in, f"{page}/release", page=page)
    assert "Conversazione restituita al bot" in released.get_data(as_text=True)
    nobody = post_form(signed_in, f"{page}/assign", {"user_id": "999999"}, page=page)
    assert "Collega non trovato" in nobody.get_data(as_text=True)
    assigned = post_form(signed_in, f"{page}/assign", {"user_id": str(colleague.id)}, page=page)
    assert "assegnata a bruno@studio-rossi.it" in assigned.get_data(as_text=True)
    not_mine = post_form(signed_in, f"{page}/close", page=page)
    assert "in carico a un collega" in not_mine.get_data(as_text=True)

    holder = app.test_client()
    login(holder, colleague.email)
    closed = post_form(holder, f"{page}/close", page=page)
    assert "Conversazione chiusa" in closed.get_data(as_text=True)
    assert reload(svc, conversation).status == "closed"
    assert [
        a
        for a in audit_actions(svc, tenant)
        if a.startswith("conversation.") and a != "conversation.view"
    ] == [
        "conversation.takeover",
        "conversation.release",
        "conversation.assign",
        "conversation.close",
    ]


# -- tickets ----------------------------------------------------------------------------


def test_the_ticket_lists_page_links_keep_its_filters(signed_in, svc, tenant):
    make_ticket(svc, make_conversation(svc, tenant))

    html = signed_in.get("/console/tickets?stato=open&giorni=1&prima=99").get_data(as_text=True)

    [back] = re.findall(r'<a href="([^"]+)">Torna ai più recenti</a>', html)
    assert "stato=open" in back and "giorni=1" in back and "prima" not in back


def test_ticket_status_changes_are_audited(signed_in, svc, tenant):
    conversation = make_conversation(svc, tenant)
    ticket = make_ticket(svc, conversation)

    listing = signed_in.get("/console/tickets?stato=open").get_data(as_text=True)
    assert f"#{ticket.id}" in listing
    page = f"/console/tickets/{ticket.id}"
    assert f"/console/conversations/{conversation.id}" in signed_in.get(page).get_data(as_text=True)
    changed = post_form(signed_in, f"{page}/status", {"status": "in_progress"}, page=page)
    assert "in lavorazione" in changed.get_data(as_text=True)
    invalid = post_form(signed_in, f"{page}/status", {"status": "boh"}, page=page)
    assert "Stato del ticket non valido" in invalid.get_data(as_text=True)
    post_form(signed_in, f"{page}/status", {"status": "done"}, page=page)
    with svc.db.session() as session:
        assert session.get(Ticket, ticket.id).status == "done"
        changes = [
            e.detail
            for e in session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "ticket.status")
                .order_by(AuditEvent.id)
            )
        ]
    assert changes == [{"from": "open", "to": "in_progress"}, {"from": "in_progress", "to": "done"}]
    still_open = signed_in.get("/console/tickets?stato=open").get_data(as_text=True)
    assert f"#{ticket.id}</a>" not in still_open


# -- security headers -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/login", "/healthz", "/api/v1/contacts"])
def test_security_headers_on_every_response(client, path):
    headers = client.get(path).headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"


def test_twilio_webhook_answers_carry_only_the_sniffing_guard(client):
    headers = client.post("/webhooks/twilio/messages", data={"To": "x"}).headers

    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in headers


def test_session_cookie_is_httponly_samesite_and_secure_on_https(client, operator):
    cookies = login(client, operator.email).headers.getlist("Set-Cookie")
    (cookie,) = [c for c in cookies if c.startswith("session=")]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    (device,) = [c for c in cookies if c.startswith("portineria_device=")]
    assert "HttpOnly" in device and "SameSite=Strict" in device and "Secure" in device


# -- real time: Pusher ------------------------------------------------------------------


def _pusher_auth(
    client: FlaskClient, channel: str, socket_id: str = "1234.5678", with_token: bool = True
) -> Any:
    headers = {"X-CSRFToken": csrf_token(client, "/console/")} if with_token else {}
    return client.post(
        "/pusher/auth", data={"socket_id": socket_id, "channel_name": channel}, headers=headers
    )


def test_pusher_auth_signs_only_the_operators_own_channels(
    signed_in, tenant, operator, other_tenant, pusher_fake
):
    for channel in (tenant_channel(tenant.slug), user_channel(operator.id)):
        response = _pusher_auth(signed_in, channel)
        assert response.status_code == 200
        key, signature = response.get_json()["auth"].split(":")
        expected = hmac.new(
            pusher_fake.secret.encode(), f"1234.5678:{channel}".encode(), hashlib.sha256
        ).hexdigest()
        assert (key, signature) == (pusher_fake.key, expected)

    for channel in (
        tenant_channel(other_tenant.slug),
        user_channel(operator.id + 1),
        "private-tenant-studio-rossi-bis",
        "presence-tenant-studio-rossi",
    ):
        response = _pusher_auth(signed_in, channel)
        assert response.status_code == 403, channel
        assert response.get_json()["error"] == "forbidden"


@pytest.mark.parametrize(
    ("socket_id", "channel"),
    [
        ("abc", "private-tenant-studio-rossi"),
        ("1.2", ""),
        ("1.2:evil", "private-tenant-studio-rossi"),
    ],
)
def test_pusher_auth_rejects_malformed_input(pusher_fake, signed_in, socket_id, channel):
    response = _pusher_auth(signed_in, channel, socket_id=socket_id)
    assert response.status_code == 400 and response.is_json


def test_pusher_auth_needs_login_and_csrf(pusher_fake, app, signed_in, tenant):
    assert _pusher_auth(signed_in, tenant_channel(tenant.slug), with_token=False).status_code == 400
    stranger = app.test_client()
    token = csrf_token(stranger)  # a valid token, but nobody signed in
    response = stranger.post(
        "/pusher/auth",
        headers={"X-CSRFToken": token},
        data={"socket_id": "1.2", "channel_name": tenant_channel(tenant.slug)},
    )
    assert response.status_code == 401 and response.is_json


def test_pusher_auth_is_404_without_pusher(signed_in, tenant):
    response = _pusher_auth(signed_in, tenant_channel(tenant.slug))
    assert response.status_code == 404 and response.is_json


def test_console_moves_reach_pusher_with_valid_signatures(signed_in, svc, tenant, pusher_fake):
    conversation = make_conversation(svc, tenant)
    page = f"/console/conversations/{conversation.id}"
    post_form(signed_in, f"{page}/takeover", page=page)

    events = pusher_fake.wait_for_events(1)
    assert events[0]["name"] == "conversation.updated"
    assert events[0]["channels"] == [tenant_channel(tenant.slug)]
    assert events[0]["data"]["conversation_id"] == conversation.id
    assert pusher_fake.rejected == 0


def test_an_arriving_emergency_reaches_pusher_with_valid_signatures(
    app, client, svc, tenant, pusher_fake
):
    make_contact(svc, tenant)
    send_inbound(client, "Aiuto! C'è puzza di gas in cantina")
    drain(svc)

    names = {e["name"] for e in pusher_fake.wait_for_events(3)}
    assert {"conversation.needs_attention", "conversation.emergency", "message.created"} <= names
    assert all(e["channels"][0] == tenant_channel(tenant.slug) for e in pusher_fake.events)
    assert pusher_fake.rejected == 0


# -- real time: the app's own stream ----------------------------------------------------


def _stream_events(response: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The events and the id of one answer of the console's event stream."""
    events, cursor = [], None
    for block in response.get_data(as_text=True).split("\n\n"):
        if block.startswith("data: "):
            events.append(json.loads(block[len("data: ") :]))
        elif block.startswith("id: "):
            cursor = block[len("id: ") :]
    return events, cursor


def test_event_stream_relays_the_operators_channels_only(
    signed_in, svc, tenant, operator, other_tenant
):
    first = signed_in.get("/console/events")
    assert first.status_code == 200
    assert first.mimetype == "text/event-stream"
    assert first.get_data(as_text=True).startswith("retry: ")
    events, cursor = _stream_events(first)
    assert events == [] and cursor  # from here on

    svc.notifier.publish(
        OperatorEvent(
            (tenant_channel(other_tenant.slug),), "message.created", {"conversation_id": 1}
        )
    )
    svc.notifier.publish(
        OperatorEvent(
            (tenant_channel(tenant.slug),),
            "conversation.emergency",
            {"conversation_id": 7, "reason": "emergency"},
        )
    )
    svc.notifier.publish(
        OperatorEvent((user_channel(operator.id),), "conversation.assigned", {"conversation_id": 8})
    )

    received, after = _stream_events(
        signed_in.get("/console/events", headers={"Last-Event-ID": cursor})
    )
    assert [r["event"] for r in received] == ["conversation.emergency", "conversation.assigned"]
    assert received[0]["data"]["conversation_id"] == 7
    again, _ = _stream_events(signed_in.get("/console/events", headers={"Last-Event-ID": after}))
    assert again == []


def test_an_event_sent_to_both_of_an_operators_channels_arrives_once(
    signed_in, svc, tenant, operator
):
    _, cursor = _stream_events(signed_in.get("/console/events"))
    svc.notifier.publish(
        OperatorEvent(
            (tenant_channel(tenant.slug), user_channel(operator.id)),
            "message.created",
            {"conversation_id": 3},
        )
    )
    received, _ = _stream_events(signed_in.get(f"/console/events?after={cursor}"))
    assert [r["event"] for r in received] == ["message.created"]


def test_event_stream_answers_at_once_and_ends(signed_in):
    import time

    started = time.monotonic()
    response = signed_in.get("/console/events")
    assert response.status_code == 200
    assert time.monotonic() - started < 1.0


def test_event_stream_with_a_forged_cursor_starts_from_now(signed_in):
    events, cursor = _stream_events(signed_in.get("/console/events?after=x%0Adata:%20%7B%7D"))
    assert events == [] and cursor and "\n" not in cursor


def test_event_stream_tells_the_browser_to_come_back_later_without_redis(signed_in, redis_server):
    redis_server.stop()
    try:
        response = signed_in.get("/console/events")
    finally:
        redis_server.start()
    assert response.status_code == 200
    assert response.get_data(as_text=True).startswith("retry: ")


def test_event_stream_is_404_with_pusher(pusher_fake, signed_in):
    assert signed_in.get("/console/events").status_code == 404


# -- audit chain ------------------------------------------------------------------------


def test_tampering_with_an_audit_row_is_detected_and_named(signed_in, svc, tenant, runner):
    conversation = make_conversation(svc, tenant)
    signed_in.get(f"/console/conversations/{conversation.id}")
    intact = runner.invoke(args=["audit", "verify", "--tenant", tenant.slug])
    assert intact.exit_code == 0, intact.output
    with svc.db.session() as session:
        viewed = session.scalar(select(AuditEvent).where(AuditEvent.action == "conversation.view"))
        # Someone hides where they looked from.
        session.execute(update(AuditEvent).where(AuditEvent.id == viewed.id).values(ip="10.9.9.9"))

    broken = runner.invoke(args=["audit", "verify", "--tenant", tenant.slug])

    assert broken.exit_code != 0
    assert f"audit event {viewed.id}: content does not match its hash" in broken.output


def _trail(svc: Services, tenant, count: int) -> list[int]:
    with svc.db.session() as session:
        return [
            record_audit(session, tenant.id, "ticket.view", actor="test", target_id=n).id
            for n in range(count)
        ]


def test_the_chain_is_verified_a_batch_at_a_time_and_names_each_broken_link(svc, tenant):
    ids = _trail(svc, tenant, 11)
    with svc.db.session() as session:
        session.execute(update(AuditEvent).where(AuditEvent.id == ids[4]).values(ip="10.9.9.9"))
        session.execute(delete(AuditEvent).where(AuditEvent.id == ids[8]))

    with svc.db.read() as session:
        report = verify_chain(session, tenant.id, batch_size=3)

    assert report.checked == 10
    assert [(p.event_id, p.reason.split(":")[0]) for p in report.problems] == [
        (ids[4], "content does not match its hash"),
        (ids[9], "previous hash does not match"),
    ]


def test_an_intact_chain_checked_in_batches_has_no_problem(svc, tenant):
    _trail(svc, tenant, 7)

    with svc.db.read() as session:
        report = verify_chain(session, tenant.id, batch_size=2)

    assert (report.checked, report.problems, report.more_problems) == (7, [], 0)


def test_a_rewritten_chain_reports_the_first_problems_and_counts_the_rest(svc, tenant):
    _trail(svc, tenant, MAX_PROBLEMS + 5)
    with svc.db.session() as session:
        session.execute(update(AuditEvent).values(actor="someone else"))

    with svc.db.read() as session:
        report = verify_chain(session, tenant.id)

    assert len(report.problems) == MAX_PROBLEMS
    assert report.more_problems == 5
    assert report.problems[0].event_id == min(e for e in _all_ids(svc))


def _all_ids(svc: Services) -> list[int]:
    with svc.db.read() as session:
        return list(session.scalars(select(AuditEvent.id)))


# -- demo operator ----------------------------------------------------------------------


def test_demo_operator_is_seeded_idempotently_and_can_sign_in(client, svc, tenant):
    first = seed_demo_operator(svc, tenant)
    assert seed_demo_operator(svc, tenant) == first
    with svc.db.session() as session:
        assert len(session.scalars(select(User).where(User.email == first[0])).all()) == 1

    assert login(client, *first).status_code == 302


def test_a_signed_in_operator_opens_the_public_notice_without_stalling(client, tenant, operator):
    import time

    login(client, operator.email)
    started = time.monotonic()
    response = client.get(f"/privacy/{tenant.slug}")
    assert response.status_code == 200
    assert time.monotonic() - started < 2.0
