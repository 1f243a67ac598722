"""Administration in the console, through the Flask client: users and one-time
password links, office settings, the privacy notice, contacts and their import,
data-subject requests, exports and logs; an operator gets 403 on every admin route."""

from __future__ import annotations

import html as markup
import io
import json
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from helpers import (
    PASSWORD,
    RESIDENT,
    add_message,
    audit_actions,
    csrf_token,
    drain,
    login,
    make_contact,
    make_conversation,
    make_tenant,
    make_user,
    parse_lines,
    post_form,
    records,
    send_inbound,
)
from sqlalchemy import select, update

from bot import create_app
from bot.office import accounts
from bot.office.demo import seed_demo_accounts
from bot.office.settings import PARSERS
from bot.services import Services
from notify.push import generate_vapid_key
from storage.models import (
    AuditEvent,
    Contact,
    DataRequest,
    PasswordLink,
    PrivacyNotice,
    Tenant,
    User,
    utcnow,
)

ADMIN_EMAIL = "dpo@studio-rossi.it"
OPERATOR_EMAIL = "anna@studio-rossi.it"


def _admin_rules() -> list[tuple[str, str]]:
    """Every admin route of the app, with each of its methods (read from the url_map,
    so a route added later is covered without touching this file)."""
    folder = tempfile.mkdtemp(prefix="portineria-routes-")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{folder}/routes.db",
            "SECRET_KEY": "routes",
            "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "VAPID_PRIVATE_KEY": generate_vapid_key(),
            "MEDIA_ROOT": folder,
        }
    )
    rules = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/console/admin"):
            continue
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            rules.append((method, path))
    app.extensions["portineria"].db.dispose()
    return sorted(rules)


ADMIN_RULES = _admin_rules()


@pytest.fixture
def admin(svc: Services, tenant: Tenant) -> User:
    return make_user(svc, tenant, ADMIN_EMAIL, role="admin")


@pytest.fixture
def operator(svc: Services, tenant: Tenant) -> User:
    return make_user(svc, tenant, OPERATOR_EMAIL)


@pytest.fixture
def as_admin(client: FlaskClient, admin: User) -> FlaskClient:
    assert login(client, admin.email).status_code == 302
    return client


def other_browser(app: Any, email: str) -> FlaskClient:
    browser = app.test_client()
    assert login(browser, email).status_code == 302
    return browser


def signed_in(browser: FlaskClient) -> bool:
    return browser.get("/console/").status_code == 200


def text(response: Any) -> str:
    """The page as a person reads it (entities decoded)."""
    return markup.unescape(response.get_data(as_text=True))


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return text(response)


def post(client: FlaskClient, path: str, data: dict[str, str] | None = None, **kw: Any) -> Any:
    return client.post(
        path, data={"csrf_token": csrf_token(client, "/console/"), **(data or {})}, **kw
    )


def link_in(html: str) -> str:
    found = re.search(r'id="password-link"[^>]*value="([^"]+)"', html)
    assert found, html
    return found.group(1).replace("http://localhost", "")


# -- roles ------------------------------------------------------------------------------


def test_the_admin_routes_are_found_in_the_url_map():
    assert ("GET", "/console/admin/users") in ADMIN_RULES
    assert ("POST", "/console/admin/requests/1/erase") in ADMIN_RULES
    assert len(ADMIN_RULES) > 30


@pytest.mark.parametrize(("method", "path"), ADMIN_RULES, ids=[f"{m} {p}" for m, p in ADMIN_RULES])
def test_an_operator_gets_403_on_every_admin_page_and_action(client, operator, method, path):
    assert login(client, operator.email).status_code == 302
    if method == "GET":
        response = client.get(path)
    else:
        response = client.open(
            path, method=method, data={"csrf_token": csrf_token(client, "/console/")}
        )
    assert response.status_code == 403


def test_an_operator_sees_no_administration_in_the_menu(client, operator):
    assert login(client, operator.email).status_code == 302
    html = page(client, "/console/")
    assert "Amministrazione" not in html and "/console/admin" not in html


# -- users -------------------------------------------------------------------------------


def test_an_invited_colleague_sets_a_password_through_the_link_once(app, svc, tenant, as_admin):
    response = post(
        as_admin, "/console/admin/users", {"email": "Marco@Studio-Rossi.it", "role": "operator"}
    )
    assert response.status_code == 200
    link = link_in(text(response))

    colleague = app.test_client()
    assert "marco@studio-rossi.it" in page(colleague, link)
    token = csrf_token(colleague, link)
    done = colleague.post(
        link,
        data={
            "csrf_token": token,
            "password": "una-password-nuova",
            "confirm": "una-password-nuova",
        },
    )
    assert done.status_code == 302 and done.headers["Location"] == "/console/login"
    assert login(colleague, "marco@studio-rossi.it", "una-password-nuova").status_code == 302
    # Once only.
    assert app.test_client().get(link).status_code == 404
    assert "user.invite" in audit_actions(svc, tenant) and "user.password_set" in audit_actions(
        svc, tenant
    )


def test_a_link_is_kept_only_as_a_hash(svc, tenant, as_admin, operator):
    response = post(as_admin, f"/console/admin/users/{operator.id}/reset")
    token = link_in(text(response)).rsplit("/", 1)[1]
    with svc.db.read() as session:
        stored = session.scalars(select(PasswordLink.token_hash)).all()
    assert token not in stored and len(stored) == 1


def test_a_short_password_or_a_mismatch_keeps_the_link_usable(app, as_admin, operator):
    link = link_in(text(post(as_admin, f"/console/admin/users/{operator.id}/reset")))
    colleague = app.test_client()
    token = csrf_token(colleague, link)
    short = colleague.post(
        link, data={"csrf_token": token, "password": "corta", "confirm": "corta"}
    )
    assert short.status_code == 400 and "almeno 10 caratteri" in text(short)
    other = colleague.post(
        link,
        data={"csrf_token": token, "password": "password-lunga-1", "confirm": "diversa-lunga-2"},
    )
    assert other.status_code == 400 and "non coincidono" in text(other)
    assert colleague.get(link).status_code == 200


def test_a_reset_link_ends_the_accounts_other_sessions(app, as_admin, operator):
    elsewhere = other_browser(app, operator.email)
    link = link_in(text(post(as_admin, f"/console/admin/users/{operator.id}/reset")))
    assert signed_in(elsewhere)  # making the link changes nothing yet

    colleague = app.test_client()
    token = csrf_token(colleague, link)
    colleague.post(
        link,
        data={"csrf_token": token, "password": "nuova-password-9", "confirm": "nuova-password-9"},
    )

    assert not signed_in(elsewhere)
    assert login(app.test_client(), operator.email, "nuova-password-9").status_code == 302


def test_a_newer_or_expired_link_replaces_the_older(svc, tenant, app, as_admin, operator):
    first = link_in(text(post(as_admin, f"/console/admin/users/{operator.id}/reset")))
    second = link_in(text(post(as_admin, f"/console/admin/users/{operator.id}/reset")))
    assert app.test_client().get(first).status_code == 404
    assert app.test_client().get(second).status_code == 200
    with svc.db.session() as session:
        session.execute(update(PasswordLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert app.test_client().get(second).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_disabling_a_user_ends_their_sessions_and_is_audited(app, svc, tenant, as_admin, operator):
    elsewhere = other_browser(app, operator.email)
    assert signed_in(elsewhere)

    response = post(as_admin, f"/console/admin/users/{operator.id}/disable", follow_redirects=True)

    assert "Utente disattivato" in text(response)
    assert not signed_in(elsewhere)
    assert login(app.test_client(), operator.email).status_code == 401
    assert "user.disable" in audit_actions(svc, tenant)
    post(as_admin, f"/console/admin/users/{operator.id}/enable")
    assert login(app.test_client(), operator.email).status_code == 302


def test_changing_a_role_applies_at_once(app, svc, as_admin, operator):
    elsewhere = other_browser(app, operator.email)
    post(as_admin, f"/console/admin/users/{operator.id}/role", {"role": "admin"})
    assert not signed_in(elsewhere)
    promoted = other_browser(app, operator.email)
    assert promoted.get("/console/admin/users").status_code == 200


def test_the_last_admin_cannot_disable_or_demote_themselves(svc, tenant, as_admin, admin):
    for action, data in (("disable", {}), ("role", {"role": "operator"})):
        response = post(
            as_admin, f"/console/admin/users/{admin.id}/{action}", data, follow_redirects=True
        )
        assert "senza un amministratore attivo" in text(response)
    with svc.db.read() as session:
        kept = session.get(User, admin.id)
        assert kept is not None and kept.active and kept.role == "admin"
    other = make_user(svc, tenant, "second@studio-rossi.it", role="admin")
    post(as_admin, f"/console/admin/users/{other.id}/disable")
    response = post(
        as_admin,
        f"/console/admin/users/{admin.id}/role",
        {"role": "operator"},
        follow_redirects=True,
    )
    assert "senza un amministratore attivo" in text(response)


def test_another_offices_user_is_404(svc, as_admin):
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    foreign = make_user(svc, other, "x@bianchi.it")
    assert post(as_admin, f"/console/admin/users/{foreign.id}/disable").status_code == 404
    assert post(as_admin, f"/console/admin/users/{foreign.id}/reset").status_code == 404


# -- settings ------------------------------------------------------------------------------


def test_the_settings_form_shows_every_key_the_settings_module_declares(as_admin):
    html = page(as_admin, "/console/admin/settings")
    for key in PARSERS:
        assert f'name="{key}"' in html, key
    assert "retention.messages_days" not in re.sub(r'(name|id|for|href)="[^"]*"', "", html)


def test_settings_are_validated_saved_and_audited(svc, tenant, as_admin):
    response = post(
        as_admin,
        "/console/admin/settings",
        {
            "proper_channel": "la PEC studio@pec.it",
            "retention.messages_days": "180",
            "store_profile_name": "true",
            "approved_templates": f"Avviso lavori | HX{'a' * 32}\nAssemblea | HX{'b' * 32}",
        },
        follow_redirects=True,
    )
    assert "Impostazioni salvate (4 modificate)" in text(response)
    with svc.db.read() as session:
        settings = session.get(Tenant, tenant.id).settings
    assert settings["proper_channel"] == "la PEC studio@pec.it"
    assert settings["retention"]["messages_days"] == 180
    assert settings["store_profile_name"] is True
    assert settings["approved_templates"][1] == {
        "name": "Assemblea",
        "content_sid": "HX" + "b" * 32,
    }
    assert "tenant.settings" in audit_actions(svc, tenant)


def test_an_invalid_setting_is_refused_in_italian_and_nothing_is_stored(svc, tenant, as_admin):
    response = post(
        as_admin,
        "/console/admin/settings",
        {
            "proper_channel": "la PEC studio@pec.it",
            "retention.media_days": "0",
            "templates.work_order": "HX12",
        },
    )
    html = text(response)
    assert response.status_code == 400
    assert "Serve un numero da 1 a 3650." in html and "Serve un ContentSid" in html
    assert "expected" not in html
    with svc.db.read() as session:
        assert "proper_channel" not in session.get(Tenant, tenant.id).settings


def test_an_office_without_a_proper_channel_shows_every_user_a_blocking_banner(
    svc, tenant, client, as_admin, operator
):
    assert 'id="not-live"' in page(as_admin, "/console/")
    operator_browser = other_browser(client.application, operator.email)
    assert "manca il canale ufficiale" in page(operator_browser, "/console/")
    post(as_admin, "/console/admin/settings", {"proper_channel": "la PEC studio@pec.it"})
    assert 'id="not-live"' not in page(as_admin, "/console/")


def test_on_call_people_are_added_and_removed(svc, tenant, as_admin):
    post(as_admin, "/console/admin/oncall", {"name": "Luca Bianchi", "phone": "+393471234567"})
    bad = post(
        as_admin, "/console/admin/oncall", {"name": "Luca", "phone": "123"}, follow_redirects=True
    )
    assert "numero di telefono valido" in text(bad)
    html = page(as_admin, "/console/admin/settings")
    assert "Luca Bianchi" in html
    person = re.search(r"/console/admin/oncall/(\d+)/remove", html)
    assert person
    post(as_admin, f"/console/admin/oncall/{person.group(1)}/remove")
    assert "Luca Bianchi" not in page(as_admin, "/console/admin/settings")
    assert ["oncall.add", "oncall.remove"] == [
        a for a in audit_actions(svc, tenant) if a.startswith("oncall")
    ]


# -- the privacy notice ---------------------------------------------------------------------


def test_the_default_full_notice_is_complete(as_admin):
    html = page(as_admin, "/console/admin/notice")
    for part in (
        "## Titolare del trattamento",
        "DPO",
        "## Finalità e basi giuridiche",
        "Art. 6(1)(b) GDPR",
        "## Destinatari",
        "## Trasferimenti verso paesi terzi",
        "Twilio",
        "## Conservazione",
        "365 giorni",
        "## I suoi diritti",
        "Garante per la protezione dei dati personali",
    ):
        assert part in html, part


def test_a_published_version_is_shown_in_full_on_the_public_page(app, svc, tenant, as_admin):
    full = "## Titolare\n{office}, via Roma 1.\n\n## Diritti\n- accesso\n- cancellazione"
    form = {"version": "2", "text": "Breve di {office}.", "full_text": full}
    preview = text(post(as_admin, "/console/admin/notice/preview", form))
    assert "Studio Rossi, via Roma 1." in preview and "<li>cancellazione</li>" in preview

    back = text(post(as_admin, "/console/admin/notice/edit", form))
    assert "Breve di {office}." in back and "via Roma 1." in back  # the edits are kept

    published = post(as_admin, "/console/admin/notice/publish", form, follow_redirects=True)
    assert "versione 2 pubblicata" in text(published)

    public = text(app.test_client().get(f"/privacy/{tenant.slug}"))
    assert "<h2>Titolare</h2>" in public and "Studio Rossi, via Roma 1." in public
    assert "<li>accesso</li>" in public and "Versione 2" in public
    with svc.db.read() as session:
        notices = session.scalars(select(PrivacyNotice).order_by(PrivacyNotice.id)).all()
    assert [(n.version, n.active) for n in notices] == [("1", False), ("2", True)]
    listed = page(as_admin, "/console/admin/notice")
    assert notices[0].sha256 in listed and notices[1].full_sha256 in listed
    assert "notice.publish" in audit_actions(svc, tenant)


def test_a_version_published_before_full_texts_shows_its_short_text(app, tenant):
    public = text(app.test_client().get(f"/privacy/{tenant.slug}"))
    assert "Informativa breve: Studio Rossi tratta" in public


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"version": "1"}, "Questa versione esiste già"),
        ({"text": "Ciao {nome}"}, "parentesi graffe"),
        ({"text": ""}, "L'informativa breve va scritta"),
        ({"full_text": ""}, "L'informativa completa va scritta"),
    ],
)
def test_a_notice_that_would_break_the_welcome_is_refused(svc, tenant, as_admin, form, problem):
    data = {"version": "2", "text": "Breve.", "full_text": "Completa.", **form}
    for path in ("/console/admin/notice/preview", "/console/admin/notice/publish"):
        response = post(as_admin, path, data)
        assert response.status_code == 400 and problem in text(response)
    with svc.db.read() as session:
        assert len(session.scalars(select(PrivacyNotice)).all()) == 1


def test_a_notice_larger_than_the_webhook_limit_can_be_published(app, tenant, as_admin):
    full = "## Titolo\n" + ("Una riga dell'informativa completa. " * 2500)
    assert len(full) > 64 * 1024
    form = {"version": "2", "text": "Breve.", "full_text": full[:59_000]}
    assert post(as_admin, "/console/admin/notice/publish", form).status_code == 302


def test_the_root_leads_to_the_console(client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/console/"


# -- contacts ------------------------------------------------------------------------------


def test_contacts_are_searched_filtered_and_paged(svc, tenant, as_admin):
    for n in range(55):
        make_contact(
            svc,
            tenant,
            f"+39333100{n:04d}",
            consent="granted" if n % 2 else "none",
            legal_basis="consent" if n % 2 else None,
        )
    html = page(as_admin, "/console/admin/contacts?q=3331000042")
    assert "+393331000042" in html and "+393331000041" not in html
    none = page(as_admin, "/console/admin/contacts?base=nessuna")
    assert "+393331000042" in none and "+393331000041" not in none
    first = page(as_admin, "/console/admin/contacts")
    next_link = re.search(r'href="([^"]+)" id="next-page"', first)
    assert next_link and "+393331000054" in first and "+393331000000" not in first
    second = page(as_admin, next_link.group(1).replace("&amp;", "&"))
    assert "+393331000000" in second and "+393331000054" not in second
    assert page(as_admin, "/console/admin/contacts?tipo=%3Cx%3E&dopo=abc")  # bad input: no error


def test_a_contact_shows_basis_source_and_the_ledger_with_its_evidence(
    client, svc, tenant, as_admin
):
    send_inbound(client, "Buongiorno")
    send_inbound(client, "ACCETTO")
    drain(svc)
    with svc.db.read() as session:
        contact = session.scalar(select(Contact))
    html = page(as_admin, f"/console/admin/contacts/{contact.id}")
    assert "ha scritto su WhatsApp" in html and "consenso dato" in html
    assert "«accetto»" in html and "informativa inviata" in html and "versione 1" in html
    assert "contact.view" in audit_actions(svc, tenant)


def test_a_csv_upload_imports_rows_and_reports_each_one(svc, tenant, as_admin):
    good = "".join(f"+39333200{n:04d},condomino,contract,,\n" for n in range(2000))
    body = (
        "phone,kind,legal_basis,consent_at,consent_method\n"
        "+393331112222,fornitore,consent,2026-03-01T10:00:00+01:00,modulo firmato\n"
        "12,condomino,contract,,\n"
        "+393331113333,condomino,consent,,\n" + good
    )
    assert len(body) > 64 * 1024  # over the app's default body limit
    response = as_admin.post(
        "/console/admin/contacts/import",
        data={
            "csrf_token": csrf_token(as_admin, "/console/"),
            "file": (io.BytesIO(body.encode()), "contatti.csv"),
        },
        content_type="multipart/form-data",
    )
    html = text(response)
    assert response.status_code == 200
    assert "importate 2001" in html and "rifiutate 2" in html
    assert "numero di telefono non valido" in html and "consenso senza data e ora" in html
    with svc.db.read() as session:
        assert len(session.scalars(select(Contact)).all()) == 2001
    assert "contacts.import" in audit_actions(svc, tenant)


def test_a_file_without_the_columns_is_refused_in_italian(as_admin):
    response = as_admin.post(
        "/console/admin/contacts/import",
        data={
            "csrf_token": csrf_token(as_admin, "/console/"),
            "file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv"),
        },
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert "Mancano le colonne" in text(response)


# -- data-subject requests ---------------------------------------------------------------


def _granted_by_chat(client: FlaskClient, svc: Services) -> None:
    send_inbound(client, "Buongiorno")
    send_inbound(client, "ACCETTO")
    drain(svc)


def test_an_access_request_by_chat_is_queued_and_its_export_downloaded(
    client, svc, tenant, as_admin
):
    _granted_by_chat(client, svc)
    send_inbound(client, "I MIEI DATI")
    drain(svc)

    queue = page(as_admin, "/console/admin/requests")
    assert "accesso ai dati" in queue and "WhatsApp" in queue
    with svc.db.read() as session:
        request = session.scalar(select(DataRequest))
    assert (request.due_at - request.received_at) == timedelta(days=30)
    detail = page(as_admin, f"/console/admin/requests/{request.id}")
    assert 'id="download-export"' in detail

    download = as_admin.get(f"/console/admin/requests/{request.id}/export")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    [person] = records(parse_lines(text(download)), "contact")
    assert person["contact"]["phone"] == RESIDENT
    assert "data_request.export_download" in audit_actions(svc, tenant)
    page(as_admin, "/console/admin/requests")
    with svc.db.read() as session:
        assert len(session.scalars(select(DataRequest)).all()) == 1  # opened once


def test_an_erasure_request_is_carried_out_only_after_confirmation(client, svc, tenant, as_admin):
    _granted_by_chat(client, svc)
    send_inbound(client, "I MIEI DATI")
    send_inbound(client, "CANCELLA I MIEI DATI")
    drain(svc)
    page(as_admin, "/console/admin/requests")
    with svc.db.read() as session:
        erasure = session.scalar(select(DataRequest).where(DataRequest.kind == "erasure"))
        access = session.scalar(select(DataRequest).where(DataRequest.kind == "access"))
    export = Path(access.export_path)
    assert export.exists()

    wrong = post(
        as_admin,
        f"/console/admin/requests/{erasure.id}/erase",
        {"confirm": "si"},
        follow_redirects=True,
    )
    assert "nulla è stato cancellato" in text(wrong)
    with svc.db.read() as session:
        assert session.scalar(select(Contact)) is not None

    done = post(
        as_admin,
        f"/console/admin/requests/{erasure.id}/erase",
        {"confirm": "cancella"},
        follow_redirects=True,
    )
    html = text(done)
    assert "Dati cancellati e richiesta chiusa" in html and "evasa" in html
    with svc.db.read() as session:
        assert session.scalar(select(Contact)) is None
        kept = session.get(DataRequest, erasure.id)
        assert (
            kept.status == "done"
            and kept.contact_id is None
            and kept.outcome.startswith("Dati cancellati")
        )
    assert not export.exists()  # the person's export went with their data
    assert "+39333•••4567" in page(as_admin, "/console/admin/requests")
    assert {"erasure", "data_request.close"} <= set(audit_actions(svc, tenant))


def test_a_request_entered_by_hand_is_due_in_30_days_and_closed_with_its_outcome(
    svc, tenant, as_admin
):
    make_contact(svc, tenant)
    response = post(
        as_admin,
        "/console/admin/requests",
        {
            "phone": RESIDENT,
            "kind": "access",
            "received_on": "2026-11-02",
            "received_via": "raccomandata",
        },
        follow_redirects=True,
    )
    html = text(response)
    assert "02/12/2026" in html and "raccomandata" in html
    with svc.db.read() as session:
        request = session.scalar(select(DataRequest))
    empty = post(
        as_admin,
        f"/console/admin/requests/{request.id}/close",
        {"status": "done", "outcome": " "},
        follow_redirects=True,
    )
    assert "Scrivi l'esito" in text(empty)
    prepared = post(as_admin, f"/console/admin/requests/{request.id}/export", follow_redirects=True)
    assert "Esportazione pronta" in text(prepared)
    closed = post(
        as_admin,
        f"/console/admin/requests/{request.id}/close",
        {"status": "done", "outcome": "Inviata per PEC il 3/11"},
        follow_redirects=True,
    )
    assert "Inviata per PEC il 3/11" in text(closed)
    unknown = post(
        as_admin,
        "/console/admin/requests",
        {"phone": "+393339999999", "kind": "access", "received_on": "2026-11-02"},
        follow_redirects=True,
    )
    assert "Nessun contatto con questo numero" in text(unknown)


# -- exports and logs ---------------------------------------------------------------------


def test_the_office_export_and_the_register_download_and_are_audited(svc, tenant, as_admin):
    make_contact(svc, tenant)
    export = as_admin.get("/console/admin/data/export.jsonl")
    assert export.status_code == 200 and export.mimetype == "application/x-ndjson"
    [person] = records(parse_lines(export.data.decode("utf-8")), "contact")
    assert person["contact"]["phone"] == RESIDENT
    register = as_admin.get("/console/admin/data/register.json")
    assert json.loads(register.data)["format"] == "portineria.processing-register"
    actions = audit_actions(svc, tenant)
    assert "export" in actions and "register.export" in actions


def test_verifying_the_chain_finds_a_tampered_row(svc, tenant, as_admin):
    assert "Catena integra" in text(post(as_admin, "/console/admin/audit/verify"))
    with svc.db.session() as session:
        first = session.scalar(select(AuditEvent).order_by(AuditEvent.id))
        session.execute(update(AuditEvent).where(AuditEvent.id == first.id).values(ip="10.9.9.9"))
    html = text(post(as_admin, "/console/admin/audit/verify"))
    assert "Catena interrotta" in html and f'<th scope="row">{first.id}</th>' in html


def test_the_audit_and_bot_logs_export_as_csv_with_italian_labels(client, svc, tenant, as_admin):
    _granted_by_chat(client, svc)
    audit = as_admin.get("/console/admin/audit.csv?azione=login")
    text = audit.data.decode("utf-8-sig")
    assert audit.mimetype == "text/csv" and "accesso alla console" in text and "logout" not in text
    bot = as_admin.get("/console/admin/bot-log.csv").data.decode("utf-8-sig")
    assert "consenso dato" in bot and "benvenuto" in bot
    assert {"audit_log.export", "bot_log.export"} <= set(audit_actions(svc, tenant))


def test_a_csv_cell_that_looks_like_a_formula_is_kept_as_text(svc, tenant, as_admin):
    with svc.db.session() as session:
        from bot.privacy.audit import record_audit

        record_audit(session, tenant.id, "=HYPERLINK()", actor="x")
    text = as_admin.get("/console/admin/audit.csv").data.decode("utf-8-sig")
    assert "'=HYPERLINK()" in text


def test_the_bot_log_shows_totals_and_italian_labels(client, svc, tenant, as_admin):
    _granted_by_chat(client, svc)
    html = page(as_admin, "/console/admin/bot-log")
    totals = html.split('id="bot-log-totals"')[1].split("</section>")[0]
    assert "2 voci" in totals and "benvenuto" in totals and "consenso dato" in totals
    assert "consent_granted" not in html and "welcome</td>" not in html


def test_the_retention_preview_counts_what_would_go_and_deletes_nothing(svc, tenant, as_admin):
    contact = make_contact(svc, tenant, consent="none", legal_basis=None)
    with svc.db.session() as session:
        session.execute(
            update(Contact)
            .where(Contact.id == contact.id)
            .values(created_at=utcnow() - timedelta(days=40))
        )
    html = page(as_admin, "/console/admin/retention")
    row = html.split("contatti che non hanno mai accettato")[1].split("</tr>")[0]
    assert "<td>1</td>" in row
    with svc.db.read() as session:
        assert session.get(Contact, contact.id) is not None


# -- Italian, not codes --------------------------------------------------------------------


def test_existing_pages_show_labels_not_codes(svc, tenant, as_admin, admin):
    conversation = make_conversation(svc, tenant)
    add_message(
        svc, conversation, "Devo pagare la fattura", intent="fattura_pagamento", confidence=0.9
    )
    html = page(as_admin, f"/console/conversations/{conversation.id}")
    assert "fatture e pagamenti" in html and "fattura_pagamento" not in html
    assert "whatsapp_inbound" not in html
    audit = page(as_admin, "/console/admin/audit")
    body = re.sub(r'value="[^"]*"', "", audit)
    assert "conversazione aperta" in body and "conversation.view" not in body


# -- the demo office ------------------------------------------------------------------------


def test_the_demo_seeds_an_admin_and_an_operator_who_can_sign_in(app, svc, tenant):
    seeded = seed_demo_accounts(svc, tenant)
    assert seed_demo_accounts(svc, tenant) == seeded
    with svc.db.read() as session:
        roles = {u.email: u.role for u in session.scalars(select(User))}
    assert roles == {seeded["admin"][0]: "admin", seeded["operator"][0]: "operator"}
    for email, password in seeded.values():
        assert login(app.test_client(), email, password).status_code == 302


def test_post_form_helper_still_works_for_admin_pages(as_admin):
    # The shared helper posts with the inbox's CSRF token, as the other suites do.
    assert post_form(as_admin, "/console/admin/audit/verify").status_code == 200


def test_accounts_refuse_an_unknown_role(svc, tenant, operator):
    with svc.db.session() as session, pytest.raises(accounts.InvalidAccount):
        accounts.set_role(session, tenant.id, operator.id, "owner")
    assert PASSWORD
