"""Contacts: search and filters, cursor-paged; a contact's legal basis, source and
consent ledger with its evidence; the CSV import with its per-row report."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import Select, select
from werkzeug.wrappers import Response

from bot.console.admin.access import admin_required, office
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.exceptions import InvalidImport, NotFound
from bot.office.contacts_import import import_contacts, read_csv
from bot.privacy.audit import record_actor_audit
from bot.services import services
from bot.web.numbers import parse_id
from storage.models import Contact, DataRequest
from storage.queries import contact_ledger, get_contact
from storage.vocabulary import CONTACT_BASES, Consent, ContactKind

PAGE_SIZE = 50
MAX_QUERY = 64
MAX_IMPORT_BYTES = 2 * 1024 * 1024
_DIGITS = re.compile(r"[\d\s+()./-]+")


@dataclass(frozen=True)
class ContactFilter:
    query: str = ""
    kind: str = ""
    basis: str = ""
    consent: str = ""
    after: int | None = None

    def args(self, **changes: object) -> dict[str, object]:
        wanted: dict[str, object] = {
            "q": self.query,
            "tipo": self.kind,
            "base": self.basis,
            "consenso": self.consent,
        }
        wanted.update(changes)
        return {key: value for key, value in wanted.items() if value}


def parse_contact_filter(args: Mapping[str, str]) -> ContactFilter:
    """Only values the lists offer; anything else is dropped (no input makes it fail)."""
    kind = args.get("tipo", "")
    basis = args.get("base", "")
    consent = args.get("consenso", "")
    try:
        after = parse_id(args.get("dopo", ""), "dopo") if args.get("dopo") else None
    except ValueError:
        after = None
    return ContactFilter(
        query=args.get("q", "").strip()[:MAX_QUERY],
        kind=kind if kind in set(ContactKind) else "",
        basis=basis if basis in set(CONTACT_BASES) | {"nessuna"} else "",
        consent=consent if consent in set(Consent) else "",
        after=after,
    )


def contacts_query(tenant_id: int, wanted: ContactFilter) -> Select[Contact]:
    query = select(Contact).where(Contact.tenant_id == tenant_id)
    if wanted.query:
        if _DIGITS.fullmatch(wanted.query):
            digits = re.sub(r"\D", "", wanted.query)
            query = query.where(Contact.phone.contains(digits, autoescape=True))
        else:
            query = query.where(Contact.profile_name.icontains(wanted.query, autoescape=True))
    if wanted.kind:
        query = query.where(Contact.kind == wanted.kind)
    if wanted.basis == "nessuna":
        query = query.where(Contact.legal_basis.is_(None))
    elif wanted.basis:
        query = query.where(Contact.legal_basis == wanted.basis)
    if wanted.consent:
        query = query.where(Contact.consent == wanted.consent)
    if wanted.after is not None:
        query = query.where(Contact.id < wanted.after)
    return query.order_by(Contact.id.desc()).limit(PAGE_SIZE + 1)


@bp.get("/admin/contacts")
@admin_required
def admin_contacts() -> str:
    wanted, who = parse_contact_filter(request.args), actor()
    with services().db.session() as db:
        found = db.scalars(contacts_query(who.tenant_id, wanted)).all()
        record_actor_audit(
            db, who, "contacts.view", detail={"search": bool(wanted.query), "page": wanted.after}
        )
    rows, more = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    return render_template(
        "console/admin/contacts.html",
        rows=rows,
        wanted=wanted,
        next_args=wanted.args(dopo=rows[-1].id) if more and rows else None,
        kinds=list(ContactKind),
        bases=list(CONTACT_BASES),
        consents=list(Consent),
    )


@bp.get("/admin/contacts/<id:contact_id>")
@admin_required
def admin_contact(contact_id: int) -> str:
    svc, who = services(), actor()
    with svc.db.session() as db:
        tenant = office(db)
        contact = get_contact(db, tenant, contact_id)
        if contact is None:
            raise NotFound(contact_id)
        ledger = [
            (event, svc.cipher.decrypt(event.evidence_text) if event.evidence_text else None)
            for event in contact_ledger(db, tenant, contact, svc.cipher, newest_first=True)
        ]
        requests = db.scalars(
            select(DataRequest)
            .where(DataRequest.tenant_id == tenant.id, DataRequest.contact_id == contact.id)
            .order_by(DataRequest.id.desc())
        ).all()
        # The ledger's evidence is personal data: reading it is an access.
        record_actor_audit(db, who, "contact.view", "contact", contact_id)
    return render_template(
        "console/admin/contact.html", contact=contact, ledger=ledger, requests=requests
    )


@bp.get("/admin/contacts/import")
@admin_required
def admin_contacts_import_form() -> str:
    return render_template("console/admin/contacts_import.html", results=None)


@bp.post("/admin/contacts/import")
@admin_required
def admin_contacts_import() -> Response | str | tuple[str, int]:
    upload = request.files.get("file")
    raw = upload.read(MAX_IMPORT_BYTES + 1) if upload else b""
    if not raw:
        flash("Scegli un file CSV da caricare.", "error")
        return redirect(url_for("console.admin_contacts_import_form"))
    if len(raw) > MAX_IMPORT_BYTES:
        flash("Il file è troppo grande (al massimo 2 MB): dividilo in più file.", "error")
        return redirect(url_for("console.admin_contacts_import_form"))
    try:
        rows = read_csv(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        flash("Il file non è in UTF-8: salvalo come «CSV UTF-8» e riprova.", "error")
        return redirect(url_for("console.admin_contacts_import_form"))
    except InvalidImport:
        flash("Mancano le colonne phone e legal_basis nella prima riga del file.", "error")
        return redirect(url_for("console.admin_contacts_import_form"))
    svc, who = services(), actor()
    with svc.db.read() as db:
        tenant = office(db)
    results = import_contacts(svc, tenant, rows)
    counts = {
        outcome: sum(r.outcome == outcome for r in results)
        for outcome in ("imported", "updated", "refused")
    }
    with svc.db.session() as db:
        record_actor_audit(db, who, "contacts.import", detail={"rows": len(results), **counts})
    return render_template("console/admin/contacts_import.html", results=results, counts=counts)
