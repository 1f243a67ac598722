"""The console in a real browser: Debian's chromium, headless, driven by Playwright,
against the app on a real threaded HTTP server on 127.0.0.1, with the worker's jobs
run in the test and Twilio faked on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_twilio import FakeTwilio
from flask import Flask
from helpers import (
    PASSWORD,
    RESIDENT,
    drain,
    inbound_params,
    make_contact,
    make_conversation,
    make_tenant,
    make_user,
    sign,
)
from servers import WsgiServer, free_port, wait_until

from bot import console
from bot.services import Services
from storage.models import Tenant, User

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The README's screenshots come from the browser tests. They are rewritten only on
# request, so an ordinary run leaves the checkout clean:
#   PORTINERIA_SCREENSHOTS=docs bash scripts/test.sh tests/test_console_inbox_browser.py
SCREENSHOTS = os.environ.get("PORTINERIA_SCREENSHOTS")
EMERGENCY = "Aiuto! C'è puzza di gas in cantina"
HOSTILE = '<script>window.pwned = 1; alert(1)</script><img src=x onerror="alert(2)"> la caldaia'
# Long enough for the worker, the stream and the page's fetch; short enough to fail fast.
LIVE_TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium "
    "(scripts/test.sh installs it: apt-get install chromium)",
)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def app_config(app_config: dict[str, Any], port: int) -> dict[str, Any]:
    # Served over plain HTTP on loopback: the public address is the live server's, so
    # the webhook's signatures match it and the session cookie is not marked Secure.
    app_config.update(
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", SSE_HEARTBEAT_SECONDS=1, SSE_MAX_SECONDS=120
    )
    return app_config


@pytest.fixture
def app(app: Flask) -> Flask:
    if "console" not in app.blueprints:
        console.init_app(app)
    return app


@pytest.fixture
def svc(app: Flask) -> Services:
    # No app context held open: the live server's requests each get their own.
    return app.extensions["portineria"]  # type: ignore[no-any-return]


@pytest.fixture
def live_server(app: Flask, port: int) -> Iterator[str]:
    with WsgiServer(app, port=port) as server:
        yield server.base_url


@pytest.fixture
def page(live_server: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            base_url=live_server, locale="it-IT", viewport={"width": 1280, "height": 860}
        )
        context.set_default_timeout(LIVE_TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


@pytest.fixture
def operator(svc: Services, tenant: Tenant) -> User:
    return make_user(svc, tenant, "anna@studio-rossi.it")


def send_whatsapp(base_url: str, body: str, sender: str = RESIDENT) -> None:
    """What Twilio does: a signed form POST to the public webhook address."""
    params = inbound_params(body, sender=sender)
    url = f"{base_url}/webhooks/twilio/messages"
    response = requests.post(
        url, data=params, headers={"X-Twilio-Signature": sign(url, params)}, timeout=10
    )
    assert response.status_code == 200, response.text


def sign_in(page: Any, email: str) -> None:
    page.goto("/console/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/")


def wait_for_live_connection(page: Any) -> None:
    page.wait_for_selector("#console[data-live=connected]", state="attached")


def test_operator_sees_an_emergency_live_takes_over_replies_and_releases(
    app, svc, tenant, operator, page, live_server, twilio: FakeTwilio
):
    # (The README's inbox and conversation pictures: tests/test_console_inbox_browser.py.)
    from playwright.sync_api import expect

    make_contact(svc, tenant)
    sign_in(page, operator.email)
    wait_for_live_connection(page)
    expect(page.locator("#inbox")).to_contain_text("Nessuna conversazione")
    page.evaluate("window.sameDocument = true")

    send_whatsapp(live_server, EMERGENCY)
    drain(svc)

    urgent = page.locator("#inbox tr.urgent")
    expect(urgent).to_contain_text(RESIDENT)
    expect(urgent).to_contain_text("Urgente")
    expect(page.locator("#live-banner")).to_contain_text("Emergenza")
    assert page.evaluate("window.sameDocument") is True  # updated without a reload

    urgent.get_by_role("link").click()
    expect(page.locator(".messages")).to_contain_text("puzza di gas")
    page.click("#takeover")
    expect(page.locator(".flash.ok")).to_contain_text("Hai preso in carico")
    expect(page.locator("#holder")).to_contain_text(operator.email)

    page.fill("#reply-body", "Buongiorno, il tecnico del gas arriva entro 30 minuti.")
    page.click("#send")
    expect(page.locator(".flash.ok")).to_contain_text("Messaggio in invio")
    drain(svc)
    assert wait_until(
        lambda: any("tecnico del gas" in m.get("Body", "") for m in twilio.messages), timeout=10
    )
    page.reload()
    expect(page.locator(".bubble.out").last).to_contain_text("tecnico del gas")
    expect(page.locator(".bubble.out").last).to_contain_text("accodato")

    page.click("#release")
    expect(page.locator(".flash.ok")).to_contain_text("restituita al bot")
    expect(page.locator("#mode")).to_contain_text("bot")


def test_hostile_message_body_renders_as_text(app, svc, tenant, operator, page, live_server):
    from playwright.sync_api import expect

    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    make_contact(svc, tenant)
    send_whatsapp(live_server, HOSTILE)
    drain(svc)

    sign_in(page, operator.email)
    page.locator("#inbox tbody tr").first.get_by_role("link").click()

    body = page.locator(".bubble.in .body").first
    expect(body).to_have_text(HOSTILE)
    expect(body).to_be_visible()
    assert page.locator(".messages img").count() == 0
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []


def test_another_offices_conversation_is_404_in_the_browser(svc, tenant, operator, page):
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    foreign = make_conversation(svc, other, make_contact(svc, other))
    sign_in(page, operator.email)

    response = page.goto(f"/console/conversations/{foreign.id}")

    assert response is not None and response.status == 404
    assert "Pagina non trovata" in page.content()


# Records every desktop notification the page creates, then lets the real one go on.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__notifications = [];
  if (!Real) { return; }
  function Recorded(title, options) {
    const given = options || {};
    window.__notifications.push({ title: title, body: given.body, tag: given.tag });
    return new Real(title, options);
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = Real.requestPermission.bind(Real);
  Recorded.prototype = Real.prototype;
  window.Notification = Recorded;
})();
"""


@pytest.fixture
def alerting_page(svc, tenant, operator, page, live_server) -> Any:
    """The operator's console in a browser that allows notifications and records them."""
    page.context.grant_permissions(["notifications"], origin=live_server)
    page.add_init_script(RECORD_NOTIFICATIONS)
    make_contact(svc, tenant)
    sign_in(page, operator.email)
    return page


def test_an_emergency_raises_a_desktop_notification_and_a_title_badge_without_reload(
    svc, alerting_page, live_server
):
    from playwright.sync_api import expect

    page = alerting_page
    wait_for_live_connection(page)
    page.wait_for_selector("#console[data-service-worker=registered]", state="attached")
    expect(page.locator("#push-toggle")).to_have_text("Ricevi notifiche")
    title = page.title()
    page.evaluate("window.sameDocument = true")

    send_whatsapp(live_server, EMERGENCY)
    drain(svc)

    page.wait_for_function("() => window.__notifications.length === 1")
    expect(page).to_have_title(f"(1) {title}")
    (note,) = page.evaluate("window.__notifications")
    conversation_id = page.locator("#console").get_attribute("data-last-emergency")
    assert note["title"] == "Emergenza"
    assert note["tag"] == f"emergency-{conversation_id}"
    assert "gas" not in (note["body"] or "") and RESIDENT not in (note["body"] or "")
    assert page.evaluate("window.sameDocument") is True  # no reload


def test_alerts_turned_off_in_this_browser_stay_off_after_a_reload(svc, alerting_page, live_server):
    from playwright.sync_api import expect

    page = alerting_page
    page.click("#alerts-toggle")
    expect(page.locator("#alerts-toggle")).to_have_text("Avvisi in questa finestra: no")
    page.reload()
    wait_for_live_connection(page)
    expect(page.locator("#alerts-toggle")).to_have_attribute("aria-pressed", "false")
    title = page.title()

    send_whatsapp(live_server, EMERGENCY)
    drain(svc)

    expect(page).to_have_title(f"(1) {title}")  # the badge stays: it makes no noise
    assert page.evaluate("window.__notifications") == []
