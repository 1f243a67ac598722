"""The console's CRM webhook pages in a real browser, on a phone's width (390 px)."""

# The fixtures imported below are requested by name as the tests' arguments.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

from fake_crm import FakeCrmReceiver
from helpers import make_user

# The browser, the live server and the app they need, as the console's browser tests
# set them up (imported fixtures are this module's fixtures).
from test_console_browser import (  # noqa: F401
    app,
    app_config,
    live_server,
    page,
    port,
    pytestmark,
    sign_in,
    svc,
    wait_for_live_connection,
)
from test_crm_webhooks import add, emit, signing_with

from bot.crm.delivery import CrmDispatcher, tell_admins_disabled
from bot.services import Services
from storage.models import Tenant

PHONE = {"width": 390, "height": 844}


def _fits(page: Any) -> bool:
    """Nothing sticks out sideways: wide tables scroll inside their own box."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_an_admin_adds_an_endpoint_on_a_phone_and_sees_its_secret_once(
    page: Any, svc: Services, tenant: Tenant, crm: FakeCrmReceiver
) -> None:
    admin = make_user(svc, tenant, "admin@studio-rossi.it", "admin")
    page.set_viewport_size(PHONE)
    sign_in(page, admin.email)
    page.goto("/console/admin/webhooks")
    assert _fits(page)

    page.fill("input[name=url]", crm.url)
    page.check("input[name=allow_loopback]")
    page.check("input[value='ticket.created']")
    page.click("form[action$='/admin/webhooks'] button[type=submit]")

    secret = page.text_content("#new-secret") or ""
    assert secret.startswith("whsec_") and _fits(page)
    assert "ticket.created" in (page.text_content("#endpoints") or "")
    page.click("text=Apri l'endpoint e il registro delle consegne")
    assert page.locator("#deliveries").is_visible() and _fits(page)
    assert secret not in page.content()


def test_an_admin_reads_the_delivery_log_on_a_phone_replays_and_rotates(
    page: Any, svc: Services, tenant: Tenant, crm: FakeCrmReceiver
) -> None:
    from playwright.sync_api import expect

    admin = make_user(svc, tenant, "admin@studio-rossi.it", "admin")
    made = add(svc, tenant, crm.url + "/a-rather-long-path/that-would-not-fit-on-a-phone")
    dispatcher = CrmDispatcher(svc)
    try:
        with signing_with(crm, made.secret):
            emit(svc, tenant)
            dispatcher.deliver_due()
            [event] = crm.events
            page.set_viewport_size(PHONE)
            sign_in(page, admin.email)
            page.goto(f"/console/admin/webhooks/{made.endpoint.id}")
            log = page.locator("#deliveries")
            expect(log).to_contain_text(event.id)
            expect(log).to_contain_text("consegnato")
            assert _fits(page)

            log.get_by_role("button", name="Reinvia").click()
            dispatcher.deliver_due()
            page.reload()
            expect(log.locator(".badge", has_text="reinvio")).to_have_count(1)
            assert [e.id for e in crm.events] == [event.id, event.id] and _fits(page)

        page.fill("input[name=overlap_hours]", "2")
        page.get_by_role("button", name="Nuovo segreto").click()
        secret = page.text_content("#new-secret") or ""
        expect(page.locator(".secret-once")).to_contain_text("firma con il segreto precedente")
        assert secret.startswith("whsec_") and secret != made.secret and _fits(page)
    finally:
        dispatcher.close()


def test_an_admins_open_console_is_told_at_once_when_an_endpoint_is_disabled(
    page: Any, svc: Services, tenant: Tenant, crm: FakeCrmReceiver
) -> None:
    from playwright.sync_api import expect

    admin = make_user(svc, tenant, "admin@studio-rossi.it", "admin")
    made = add(svc, tenant, crm.url)
    sign_in(page, admin.email)
    wait_for_live_connection(page)

    tell_admins_disabled(svc, tenant.id, made.endpoint.id, "crm.studio-rossi.it")

    expect(page.locator("#live-banner")).to_contain_text("Webhook CRM disattivato")
    expect(page.locator("#live-banner")).to_contain_text("crm.studio-rossi.it")
    expect(page.locator("#menu-webhooks .badge")).to_have_text("disattivato")
