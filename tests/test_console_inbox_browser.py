"""The operator's inbox in a real browser (Debian's chromium through Playwright) against
the app on a live loopback server, with Twilio faked: search, unread counts and the
title, a new message's alert, the open conversation updated live keeping the draft,
canned responses, internal notes that never reach Twilio, the templates after 24
hours, attachments as MediaUrl, the keyboard, and every new page at 390 px.

With PORTINERIA_SCREENSHOTS=docs the README's inbox and conversation screenshots are
rewritten:

    PORTINERIA_SCREENSHOTS=docs bash scripts/test.sh tests/test_console_inbox_browser.py
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import test_console_browser as browser
from fake_twilio import FakeTwilio
from helpers import (
    OFFICE_NUMBER,
    RESIDENT,
    add_message,
    drain,
    make_contact,
    make_conversation,
    make_user,
    sign,
)
from servers import wait_until
from sqlalchemy import select

from bot.office.settings import update_settings
from bot.services import Services
from storage.models import CannedResponse, Contact, Message, Ticket, User, utcnow

# The live server and the browser of the console's own browser tests.
app_config, app, svc, port = browser.app_config, browser.app, browser.svc, browser.port
live_server, page, operator = browser.live_server, browser.page, browser.operator
alerting_page, sign_in = browser.alerting_page, browser.sign_in
write = browser.send_whatsapp
wait_for_live_connection = browser.wait_for_live_connection
pytestmark = browser.pytestmark
PHONE_VIEWPORT = {"width": 390, "height": 844}
NEIGHBOUR = "+393339876543"
TEMPLATE_SID = "HX" + "cd" * 16
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 128


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(browser.SCREENSHOTS).resolve() if browser.SCREENSHOTS else tmp_path
    folder.mkdir(exist_ok=True)
    return folder


def live_office(svc: Services, tenant: Any) -> None:
    """An office that has named its proper channel (the bot is live: no banner)."""
    update_settings(svc, tenant.id, {"proper_channel": "la PEC studio@pec.it"}, actor="test")


def delivery_status(base_url: str, sid: str, status: str) -> None:
    """Twilio's signed status callback for a message we sent."""
    params = {"MessageSid": sid, "MessageStatus": status, "From": f"whatsapp:{OFFICE_NUMBER}"}
    url = f"{base_url}/webhooks/twilio/status"
    response = requests.post(
        url, data=params, headers={"X-Twilio-Signature": sign(url, params)}, timeout=10
    )
    assert response.status_code in (200, 204), response.text


def taken_over(page: Any, svc: Services, tenant: Any, live_server: str, email: str) -> None:
    """The resident wrote, the operator opened the conversation and took it over."""
    from playwright.sync_api import expect

    live_office(svc, tenant)
    make_contact(svc, tenant)
    write(live_server, "Buongiorno, il citofono della scala B non funziona")
    drain(svc)
    sign_in(page, email)
    page.locator("#inbox tbody tr").first.get_by_role("link").click()
    page.click("#takeover")
    expect(page.locator("#holder")).to_contain_text(email)
    wait_for_live_connection(page)


# What sticks out past the phone's width (empty when the page fits): tag#id.class.
SPILLS = """
() => Array.from(document.querySelectorAll("body *"))
  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 8)
  .map((e) => e.tagName + "#" + e.id + "." + e.className)
"""


def fits_a_phone(page: Any) -> list[str]:
    """``[]`` when the page has no horizontal scroll at 390 px, else what spills."""
    if page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]:
        return []
    return list(page.evaluate(SPILLS)) or ["(scrollWidth)"]


def test_the_operator_searches_by_number_and_by_ticket_number(
    svc, tenant, operator, page, live_server
):
    from playwright.sync_api import expect

    for phone in (RESIDENT, NEIGHBOUR):
        make_conversation(svc, tenant, make_contact(svc, tenant, phone))
    with svc.db.session() as session:
        neighbour = session.scalar(select(Contact).where(Contact.phone == NEIGHBOUR))
        assert neighbour is not None
        from storage.models import Conversation

        thread = session.scalar(select(Conversation).where(Conversation.contact_id == neighbour.id))
        assert thread is not None
        ticket = Ticket(tenant_id=tenant.id, conversation_id=thread.id, kind="guasto")
        session.add(ticket)
        session.flush()
        ticket_id = ticket.id
    sign_in(page, operator.email)
    expect(page.locator("#inbox tbody tr")).to_have_count(2)

    page.keyboard.press("/")  # the shortcut to the search
    page.keyboard.type("987 6543")
    page.keyboard.press("Enter")
    expect(page.locator("#inbox tbody tr")).to_have_count(1)
    expect(page.locator("#inbox tbody tr")).to_contain_text(NEIGHBOUR)

    page.fill("#search", f"#{ticket_id}")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#inbox tbody tr")).to_have_count(1)
    expect(page.locator("#inbox tbody tr")).to_contain_text(NEIGHBOUR)
    page.set_viewport_size(PHONE_VIEWPORT)
    assert fits_a_phone(page) == []


def test_a_new_message_raises_the_unread_count_the_title_and_an_alert_without_reload(
    svc, tenant, alerting_page, live_server, shots
):
    from playwright.sync_api import expect

    page = alerting_page
    live_office(svc, tenant)
    page.reload()
    wait_for_live_connection(page)
    expect(page.locator("#message-alerts-toggle")).to_have_text("Avvisi per i nuovi messaggi: sì")
    page.evaluate("window.sameDocument = true")

    write(live_server, "Buongiorno, il citofono della scala B non funziona")
    write(live_server, "Si sente solo un fruscio")
    drain(svc)

    row = page.locator("#inbox tbody tr").first
    expect(row.locator(".badge.unread")).to_contain_text("2")
    expect(row.locator("td.preview")).to_have_text("Si sente solo un fruscio")
    expect(page).to_have_title("(1) Conversazioni · Portineria")  # one to read
    page.wait_for_function("() => window.__notifications.length >= 1")
    notes = page.evaluate("window.__notifications")
    assert {n["title"] for n in notes} == {"Nuovo messaggio"}
    assert all("citofono" not in (n["body"] or "") for n in notes)  # no content leaks
    assert page.evaluate("window.sameDocument") is True

    # Another resident's emergency on top, for the README's picture of the inbox.
    make_contact(svc, tenant, NEIGHBOUR)
    write(live_server, browser.EMERGENCY, sender=NEIGHBOUR)
    drain(svc)
    expect(page.locator("#inbox tr.urgent")).to_contain_text(NEIGHBOUR)
    page.screenshot(path=str(shots / "console-inbox.png"), full_page=True)

    resident = page.locator(f"#inbox tbody tr:has-text('{RESIDENT}')")
    resident.get_by_role("link").click()
    expect(page.locator(".messages")).to_contain_text("fruscio")
    page.goto("/console/")
    expect(resident.locator(".badge.unread")).to_have_count(0)
    expect(page).to_have_title("(1) Conversazioni · Portineria")  # the emergency's


def test_new_message_alerts_turned_off_make_no_notification(
    svc, tenant, alerting_page, live_server
):
    from playwright.sync_api import expect

    page = alerting_page
    page.click("#message-alerts-toggle")
    expect(page.locator("#message-alerts-toggle")).to_have_text("Avvisi per i nuovi messaggi: no")
    page.reload()
    wait_for_live_connection(page)

    write(live_server, "Buongiorno, il citofono non va")
    drain(svc)

    expect(page.locator("#inbox tbody tr .badge.unread")).to_contain_text("1")
    page.wait_for_timeout(1000)  # past the alert's short wait
    assert page.evaluate("window.__notifications") == []


def test_the_open_conversation_updates_live_and_keeps_the_draft(
    svc, tenant, operator, page, live_server, twilio: FakeTwilio, shots
):
    from playwright.sync_api import expect

    with svc.db.session() as session:
        session.add(CannedResponse(tenant_id=tenant.id, title="Orari", body="Siamo aperti 9-13."))
    taken_over(page, svc, tenant, live_server, operator.email)
    page.evaluate("window.sameDocument = true")
    page.fill("#reply-body", "Buongiorno, mandiamo il tecnico")

    write(live_server, "Anche il portone non si chiude bene")
    drain(svc)

    expect(page.locator(".messages")).to_contain_text("Anche il portone non si chiude bene")
    assert page.input_value("#reply-body") == "Buongiorno, mandiamo il tecnico"
    assert page.evaluate("window.sameDocument") is True
    assert "Aggiorna" not in (page.locator("#live-banner").text_content() or "")

    page.reload()  # a reload keeps it too (this tab's sessionStorage)
    assert page.input_value("#reply-body") == "Buongiorno, mandiamo il tecnico"

    page.fill("#note-body", "Il tecnico ha le chiavi del portone.")
    page.click("#add-note")
    expect(page.locator(".bubble.note")).to_contain_text("non inviata al contatto")
    page.fill("#reply-body", "Buongiorno, il tecnico passa oggi alle 15.")
    page.locator("#reply-body").press("Control+Enter")  # the shortcut to send
    expect(page.locator(".flash.ok")).to_contain_text("Messaggio in invio")
    assert page.input_value("#reply-body") == ""
    drain(svc)
    assert wait_until(lambda: len(twilio.messages) >= 1, timeout=10)
    with svc.db.read() as session:
        sids = session.scalars(
            select(Message.provider_sid)
            .where(Message.direction == "out", Message.provider_sid.is_not(None))
            .order_by(Message.id)
        ).all()
    wait_for_live_connection(page)
    page.evaluate("window.sameDocument = true")
    delivery_status(live_server, sids[0], "read")
    delivery_status(live_server, sids[-1], "delivered")
    # The ticks move without a reload: the status callback tells the consoles.
    expect(page.locator(".bubble.out .ticks.read").first).to_have_text("✓✓")
    expect(page.locator(".bubble.out .ticks.delivered").last).to_have_text("✓✓")
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=str(shots / "console-conversation.png"), full_page=True)
    page.set_viewport_size(PHONE_VIEWPORT)
    assert fits_a_phone(page) == []


def test_a_canned_response_goes_into_the_reply_and_is_sent_as_edited(
    svc, tenant, operator, page, live_server, twilio: FakeTwilio
):
    from playwright.sync_api import expect

    with svc.db.session() as session:
        session.add(
            CannedResponse(
                tenant_id=tenant.id, title="Tecnico", body="Il tecnico passerà entro domani."
            )
        )
    taken_over(page, svc, tenant, live_server, operator.email)
    twilio.reset()

    page.select_option("#canned", label="Tecnico")
    assert page.input_value("#reply-body") == "Il tecnico passerà entro domani."
    page.locator("#reply-body").press("End")
    page.keyboard.type(" Grazie.")
    page.click("#send")
    expect(page.locator(".flash.ok")).to_contain_text("Messaggio in invio")
    drain(svc)

    assert wait_until(lambda: len(twilio.messages) == 1, timeout=10)
    assert twilio.messages[0]["Body"] == "Il tecnico passerà entro domani. Grazie."


def test_an_internal_note_is_shown_to_colleagues_and_never_sent_to_twilio(
    svc, tenant, operator, page, live_server, twilio: FakeTwilio
):
    from playwright.sync_api import expect

    taken_over(page, svc, tenant, live_server, operator.email)
    twilio.reset()

    page.fill("#note-body", "Condòmino anziano: meglio telefonare.")
    page.click("#add-note")
    expect(page.locator(".flash.ok")).to_contain_text("Nota interna salvata")
    expect(page.locator(".bubble.note")).to_contain_text("Condòmino anziano: meglio telefonare.")
    drain(svc)

    assert twilio.messages == []


def test_after_24_hours_the_approved_templates_are_offered_instead_of_free_text(
    svc, tenant, operator, page, live_server, twilio: FakeTwilio
):
    from playwright.sync_api import expect

    update_settings(
        svc,
        tenant.id,
        {"approved_templates": [{"name": "Ti ricontattiamo", "content_sid": TEMPLATE_SID}]},
        actor="test",
    )
    taken_over(page, svc, tenant, live_server, operator.email)
    expect(page.locator("#window")).to_contain_text("si chiude tra")
    expect(page.locator("#template-form")).to_be_hidden()
    with svc.db.session() as session:
        for contact in session.scalars(select(Contact).where(Contact.tenant_id == tenant.id)):
            contact.last_inbound_at = utcnow() - timedelta(hours=25)
    twilio.reset()

    page.reload()
    expect(page.locator("#window")).to_contain_text("Finestra di 24 ore chiusa")
    expect(page.locator("#reply-form")).to_be_hidden()
    expect(page.locator("#template-form")).to_be_visible()
    page.select_option("#template", label="Ti ricontattiamo")
    page.fill("input[name=var1]", "Mario")
    page.set_viewport_size(PHONE_VIEWPORT)
    assert fits_a_phone(page) == []
    page.click("#send-template")
    expect(page.locator(".flash.ok")).to_contain_text("Messaggio in invio")
    drain(svc)

    assert wait_until(lambda: len(twilio.messages) == 1, timeout=10)
    assert twilio.messages[0]["ContentSid"] == TEMPLATE_SID


def test_an_attachment_reaches_twilio_as_a_media_url_it_can_fetch(
    svc, tenant, operator, page, live_server, twilio: FakeTwilio
):
    from playwright.sync_api import expect

    taken_over(page, svc, tenant, live_server, operator.email)
    twilio.reset()

    page.set_input_files(
        "#attachment", files=[{"name": "foto.png", "mimeType": "image/png", "buffer": PNG}]
    )
    page.fill("#reply-body", "Ecco la foto del guasto")
    page.click("#send")
    expect(page.locator(".flash.ok")).to_contain_text("Messaggio in invio")
    drain(svc)

    assert wait_until(lambda: len(twilio.messages) == 1, timeout=10)
    (url,) = twilio.messages[0]["MediaUrl"]
    assert url.startswith(live_server + "/media/")
    fetched = requests.get(url, timeout=10)  # as Twilio would, with no session
    assert fetched.status_code == 200 and fetched.content == PNG


def test_u_opens_the_next_urgent_conversation(svc, tenant, operator, page):
    from playwright.sync_api import expect

    waiting = make_conversation(svc, tenant, make_contact(svc, tenant, RESIDENT))
    urgent = make_conversation(svc, tenant, make_contact(svc, tenant, NEIGHBOUR), priority="urgent")
    add_message(svc, urgent, "Allagamento in cantina")
    sign_in(page, operator.email)

    page.keyboard.press("u")
    page.wait_for_url(f"**/console/conversations/{urgent.id}")
    expect(page.locator("h1")).to_contain_text(NEIGHBOUR)
    with page.expect_navigation():
        page.keyboard.press("u")  # the next one after this
    assert page.url.endswith(f"/console/conversations/{waiting.id}")


def test_the_canned_responses_admin_page_fits_390_px(svc, tenant, page):
    admin: User = make_user(svc, tenant, "dpo@studio-rossi.it", role="admin")
    with svc.db.session() as session:
        session.add(CannedResponse(tenant_id=tenant.id, title="Orari", body="Siamo aperti 9-13."))
    sign_in(page, admin.email)
    page.set_viewport_size(PHONE_VIEWPORT)
    response = page.goto("/console/admin/canned")
    assert response is not None and response.status == 200
    assert fits_a_phone(page) == []
