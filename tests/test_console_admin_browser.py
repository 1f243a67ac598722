"""Every admin task in a real browser (Debian's chromium through Playwright) against
the app on a live loopback server: users, the notice, the CSV import, a requested
export, the audit chain, a report; every admin page at 390 px without horizontal
scroll. With PORTINERIA_SCREENSHOTS=docs the README's admin screenshots are rewritten:

    PORTINERIA_SCREENSHOTS=docs bash scripts/test.sh tests/test_console_admin_browser.py
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import test_console_browser as browser
from helpers import drain, make_contact, make_user, parse_lines, records
from sqlalchemy import select

from bot.office.settings import update_settings
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.models import (
    BotLogEntry,
    Contact,
    Conversation,
    DataRequest,
    Message,
    Tenant,
    Ticket,
    User,
    utcnow,
)

# The live server and the browser of the console's own browser tests.
app_config, app, svc, port = browser.app_config, browser.app, browser.svc, browser.port
live_server, page = browser.live_server, browser.page
send_whatsapp, sign_in = browser.send_whatsapp, browser.sign_in
pytestmark = browser.pytestmark
ADMIN = "dpo@studio-rossi.it"
PHONE_VIEWPORT = {"width": 390, "height": 844}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(browser.SCREENSHOTS).resolve() if browser.SCREENSHOTS else tmp_path
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def admin(svc: Services, tenant: Tenant) -> User:
    # A live office (see bot.office.readiness): the pages as an office works with them.
    update_settings(svc, tenant.id, {"proper_channel": "la PEC studio@pec.it"}, actor="test")
    return make_user(svc, tenant, ADMIN, role="admin")


def seed_a_quarter(svc: Services, tenant: Tenant) -> None:
    """Twelve weeks of an office's work, for the report's charts to show something."""
    anna = make_user(svc, tenant, "anna@studio-rossi.it")
    luca = make_user(svc, tenant, "luca@studio-rossi.it")
    now = utcnow()
    intents = ["guasto", "fattura_pagamento", "appuntamento", "documenti", "emergenza", None]
    places = ["Condominio Aurora", "via Roma 5", "via Verdi 12"]
    emergencies: list[tuple[int, datetime]] = []
    with svc.db.session() as session:
        for n in range(60):
            contact = Contact(
                tenant_id=tenant.id,
                wa_id=f"39333{n:07d}",
                phone=f"+39333{n:07d}",
                consent="granted",
            )
            session.add(contact)
            session.flush()
            opened = now - timedelta(days=n * 1.3, hours=n % 7)
            thread = Conversation(
                tenant_id=tenant.id, contact_id=contact.id, mode="bot", created_at=opened
            )
            session.add(thread)
            session.flush()
            for k in range(1 + n % 4):
                moment = opened + timedelta(minutes=5 * k)
                inbound = Message(
                    tenant_id=tenant.id,
                    conversation_id=thread.id,
                    contact_id=contact.id,
                    direction="in",
                    status="processed",
                    created_at=moment,
                )
                session.add(inbound)
                session.flush()
                session.add(
                    BotLogEntry(
                        tenant_id=tenant.id,
                        message_id=inbound.id,
                        at=moment,
                        intent=intents[(n + k) % len(intents)],
                        action="stored",
                    )
                )
            if n % 3 == 0:
                who = anna if n % 2 else luca
                session.add(
                    Message(
                        tenant_id=tenant.id,
                        conversation_id=thread.id,
                        contact_id=contact.id,
                        direction="out",
                        status="delivered",
                        purpose="operator",
                        sender_user_id=who.id,
                        created_at=opened
                        + timedelta(minutes=20 + 3 * (n % 5) + (15 if who is anna else 0)),
                    )
                )
            kind = "emergency" if n % 9 == 0 else "guasto"
            if kind == "emergency":
                emergencies.append((thread.id, opened + timedelta(minutes=2 + n % 11)))
            session.add(
                Ticket(
                    tenant_id=tenant.id,
                    conversation_id=thread.id,
                    kind=kind,
                    status="done" if n % 4 == 0 else "open",
                    created_at=opened,
                    updated_at=opened + timedelta(hours=2 + n % 30),
                    entities=[{"label": "ADDRESS", "text": places[(n // 9 + n) % 3]}],
                )
            )
    with svc.db.session() as session:
        for conversation_id, acknowledged in emergencies:
            event = record_audit(
                session,
                tenant.id,
                "conversation.takeover",
                actor=f"user:{anna.id}",
                target_type="conversation",
                target_id=conversation_id,
            )
            event.at = acknowledged


def test_an_admin_invites_a_user_then_disables_them_and_their_session_ends(
    svc, tenant, admin, page, live_server
):
    from playwright.sync_api import expect

    sign_in(page, ADMIN)
    page.click("text=Amministrazione")
    page.click(".admin-nav >> text=Utenti")
    page.fill("#invite-form input[name=email]", "marco@studio-rossi.it")
    page.select_option("#invite-form select[name=role]", "operator")
    page.click("#invite")
    link = page.input_value("#password-link")
    assert link.startswith(live_server + "/console/password/")

    colleague = page.context.browser.new_context(locale="it-IT").new_page()
    colleague.goto(link)
    colleague.fill("input[name=password]", "la-mia-password-1")
    colleague.fill("input[name=confirm]", "la-mia-password-1")
    colleague.click("button[type=submit]")
    expect(colleague.locator(".flash.ok")).to_contain_text("Password impostata")
    colleague.fill("input[name=email]", "marco@studio-rossi.it")
    colleague.fill("input[name=password]", "la-mia-password-1")
    colleague.click("button[type=submit]")
    colleague.wait_for_url("**/console/")
    expect(colleague.locator(".topbar .who")).to_contain_text("operatore")
    assert colleague.locator("text=Amministrazione").count() == 0

    page.goto("/console/admin/users")
    page.locator("tr[data-user='marco@studio-rossi.it'] button.danger").click()
    expect(page.locator(".flash.ok")).to_contain_text("sessioni sono terminate")

    colleague.reload()
    expect(colleague.locator("h1")).to_contain_text("Accesso alla console")
    colleague.context.close()


def test_an_admin_publishes_a_notice_version_seen_on_the_public_page(
    svc, tenant, admin, page, live_server, shots
):
    from playwright.sync_api import expect

    sign_in(page, ADMIN)
    page.goto("/console/admin/notice")
    expect(page.locator("textarea[name=full_text]")).to_contain_text("Garante per la protezione")
    page.screenshot(path=str(shots / "console-admin-notice.png"), full_page=False)
    page.fill("textarea[name=text]", "Informativa breve di {office}: versione di prova.")
    full = page.input_value("textarea[name=full_text]")
    page.fill(
        "textarea[name=full_text]", full + "\n## Nota dello studio\nTesto aggiunto nel browser."
    )
    page.click("#preview")
    expect(page.locator("#full-preview")).to_contain_text("Testo aggiunto nel browser.")
    page.click("#publish")
    expect(page.locator(".flash.ok")).to_contain_text("versione 2 pubblicata")
    expect(page.locator("#versions")).to_contain_text("2")

    page.goto(f"/privacy/{tenant.slug}")
    expect(page.locator("h2", has_text="Nota dello studio")).to_be_visible()
    expect(page.locator("article")).to_contain_text("Titolare del trattamento")
    expect(page.locator(".meta")).to_contain_text("Versione 2")


def test_an_admin_uploads_a_contacts_csv_and_reads_the_report(svc, tenant, admin, page, tmp_path):
    from playwright.sync_api import expect

    upload = tmp_path / "contatti.csv"
    upload.write_text(
        "phone,kind,legal_basis,consent_at,consent_method\n"
        "+393331112222,condomino,contract,,\n"
        "non-un-numero,condomino,contract,,\n",
        encoding="utf-8",
    )
    sign_in(page, ADMIN)
    page.goto("/console/admin/contacts/import")
    page.set_input_files("input[type=file]", str(upload))
    page.click("#upload")
    expect(page.locator("#import-summary")).to_contain_text("importate 1")
    expect(page.locator("#import-report")).to_contain_text("numero di telefono non valido")
    page.goto("/console/admin/contacts")
    expect(page.locator("#contacts")).to_contain_text("+393331112222")


def test_an_admin_downloads_the_export_an_access_request_by_chat_prepared(
    svc, tenant, admin, page, live_server, tmp_path
):
    from playwright.sync_api import expect

    for body in ("Buongiorno", "ACCETTO", "I MIEI DATI"):
        send_whatsapp(live_server, body)
        drain(svc)
    sign_in(page, ADMIN)
    page.goto("/console/admin/requests")
    page.locator("#requests a").first.click()
    with page.expect_download() as info:
        page.click("#download-export")
    target = tmp_path / "export.jsonl"
    info.value.save_as(target)
    [person] = records(parse_lines(target.read_text("utf-8")), "contact")
    assert person["contact"]["phone"] == "+393331234567"
    page.fill("#close-form textarea", "Consegnata di persona")
    page.click("#close-request")
    expect(page.locator("#request-status")).to_contain_text("evasa")


def test_an_admin_verifies_the_audit_chain(svc, tenant, admin, page):
    from playwright.sync_api import expect

    sign_in(page, ADMIN)
    page.goto("/console/admin/data")
    page.click("#verify-chain")
    expect(page.locator("#chain-result")).to_contain_text("Catena integra")


def test_the_report_page_renders_its_charts(svc, tenant, admin, page, shots):
    from playwright.sync_api import expect

    seed_a_quarter(svc, tenant)
    sign_in(page, ADMIN)
    page.goto("/console/admin/reports")
    charts = page.locator("img.chart")
    expect(charts).to_have_count(5)
    for index in range(5):
        assert charts.nth(index).evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.locator("#report-emergencies")).to_contain_text("via Roma 5")
    page.screenshot(path=str(shots / "console-report.png"), full_page=True)


def _admin_pages(svc: Services, tenant: Tenant) -> list[str]:
    contact = make_contact(svc, tenant, "+393337778888")
    with svc.db.session() as session:
        request = DataRequest(
            tenant_id=tenant.id,
            contact_id=contact.id,
            subject_ref="x" * 64,
            masked_phone="+39333•••8888",
            kind="erasure",
            origin="console",
            received_at=utcnow(),
            due_at=utcnow(),
        )
        session.add(request)
        session.flush()
        request_id = request.id
    return [
        "/console/admin/",
        "/console/admin/users",
        "/console/admin/settings",
        "/console/admin/notice",
        "/console/admin/contacts",
        f"/console/admin/contacts/{contact.id}",
        "/console/admin/contacts/import",
        "/console/admin/requests",
        f"/console/admin/requests/{request_id}",
        f"/console/admin/requests/{request_id}/erase",
        "/console/admin/data",
        "/console/admin/audit",
        "/console/admin/bot-log",
        "/console/admin/retention",
        "/console/admin/reports",
        f"/privacy/{tenant.slug}",
    ]


def test_every_admin_page_fits_a_390_px_phone(svc, tenant, admin, page, shots):
    pages = _admin_pages(svc, tenant)
    sign_in(page, ADMIN)
    page.goto("/console/admin/")
    page.screenshot(path=str(shots / "console-admin.png"), full_page=True)
    page.set_viewport_size(PHONE_VIEWPORT)
    wide = {}
    for path in pages:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE_VIEWPORT["width"]:
            wide[path] = width
    assert wide == {}


def test_the_notice_preview_and_a_password_link_page_fit_390_px(svc, tenant, admin, page):
    sign_in(page, ADMIN)
    page.set_viewport_size(PHONE_VIEWPORT)
    page.goto("/console/admin/notice")
    page.click("#preview")
    page.wait_for_selector("#publish")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.goto("/console/admin/users")
    page.locator("tr[data-user='dpo@studio-rossi.it'] form[action$='/reset'] button").click()
    page.wait_for_selector("#password-link")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    link = page.input_value("#password-link")
    page.goto(re.sub(r"^https?://[^/]+", "", link))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    with svc.db.read() as session:
        assert session.scalar(select(User).where(User.email == ADMIN)) is not None
