"""The console's ticket pages in a real browser (Debian's chromium, headless): a ticket
opened by hand, its page and the list, all usable on a 390 px phone."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_console_browser as browser
from test_office_world import import_office

# The browser tests' fixtures: a live server on loopback, chromium, a signed-in operator.
app_config, app, svc, port = browser.app_config, browser.app, browser.svc, browser.port
live_server, page, operator = browser.live_server, browser.page, browser.operator
sign_in, CHROMIUM = browser.sign_in, browser.CHROMIUM

PHONE_WIDTH = 390

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no chromium at /usr/bin/chromium")


def test_tickets_open_edit_and_list_on_a_390_px_phone(
    runner, svc, tenant, operator, page, tmp_path: Path
):
    import_office(runner, tenant, tmp_path)
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
    sign_in(page, operator.email)

    page.goto("/console/tickets/new")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    page.select_option("#ticket-new select[name=kind]", "guasto")
    page.fill("#ticket-new textarea[name=description]", "Luce delle scale spenta")
    page.select_option("#ticket-new select[name=building]", "AUR")
    page.click("#ticket-new button[type=submit]")
    page.wait_for_selector("#ticket-building")

    assert "Condominio Aurora" in page.inner_text("#ticket-building")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    page.fill("#note-form textarea[name=note]", "Passa il custode alle 15")
    page.click("#note-form button[type=submit]")
    page.wait_for_selector("text=Passa il custode alle 15")
    assert "nota interna" in page.inner_text("#timeline")
    page.goto("/console/tickets?condominio=AUR")
    assert page.locator("table.inbox tbody tr").count() == 1
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH


def test_the_notices_page_fits_a_390_px_phone(runner, svc, tenant, operator, page, tmp_path: Path):
    import_office(runner, tenant, tmp_path)
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
    sign_in(page, operator.email)

    page.goto("/console/notices")

    assert page.locator("#notice-form").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH


def test_an_office_with_many_suppliers_types_one_on_a_390_px_phone(
    runner, svc, tenant, operator, page, tmp_path: Path, monkeypatch
):
    from bot.console import tickets

    monkeypatch.setattr(tickets, "SUPPLIER_CHOICES", 1)  # the office has two: too many
    import_office(runner, tenant, tmp_path)
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
    sign_in(page, operator.email)

    page.goto("/console/tickets/new")
    page.select_option("#ticket-new select[name=kind]", "guasto")
    page.fill("#ticket-new textarea[name=description]", "Tubo rotto in cantina")
    page.fill("#ticket-new input[name=supplier]", "idraulico")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    page.click("#ticket-new button[type=submit]")
    page.wait_for_selector("#ticket-edit")

    chosen = page.input_value("#ticket-edit input[name=supplier]")
    assert chosen.startswith("Idraulica Rossi (idraulico) · n. ")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    page.goto("/console/tickets?fornitore=Rossi")
    assert page.locator("table.inbox tbody tr").count() == 1
    page.goto("/console/tickets?fornitore=Verdi")
    assert page.locator("table.inbox tbody tr").count() == 0
