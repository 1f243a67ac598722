"""Importing contacts from the office's CSV: ``phone,kind,legal_basis,consent_at,consent_method``,
and optionally ``name,building,scala,interno,role,trade`` (the building by its code).

Every row is checked first and reported; valid rows go in one transaction, so a
failure part-way leaves nothing half-imported. A row whose legal basis is consent
must say when and how consent was obtained, or it could not be proved later.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from bot.exceptions import InvalidImport, InvalidPhoneNumber
from bot.office.buildings import building_by_code, link_contact
from bot.office.phone import e164
from bot.privacy.consent import Evidence, record_event
from bot.services import Services
from storage.models import Contact, Tenant
from storage.queries import contact_by_phone
from storage.vocabulary import (
    CONTACT_BASES,
    BuildingRole,
    Channel,
    Consent,
    ContactKind,
    DataSource,
    LedgerEvent,
    LegalBasis,
)

COLUMNS = ("phone", "kind", "legal_basis", "consent_at", "consent_method")
OPTIONAL_COLUMNS = ("name", "building", "scala", "interno", "role", "trade")


@dataclass(frozen=True)
class RowResult:
    line: int
    phone: str | None
    outcome: str  # imported, updated, refused
    reason: str = ""


@dataclass(frozen=True)
class _Valid:
    line: int
    phone: str
    kind: ContactKind
    legal_basis: LegalBasis
    consent_at: datetime | None
    consent_method: str
    place: _Place


@dataclass(frozen=True)
class _Place:
    """The optional columns: who the person is and where (the office's own data)."""

    name: str | None = None
    building: str | None = None
    scala: str = ""
    interno: str = ""
    role: BuildingRole | None = None
    trade: str | None = None


def _cell(row: dict[str, str], column: str, limit: int) -> str:
    return " ".join((row.get(column) or "").split())[:limit]


def _check_place(line: int, phone: str, row: dict[str, str]) -> _Place | RowResult:
    role = _cell(row, "role", 16).lower()
    if role and role not in set(BuildingRole):
        return RowResult(line, phone, "refused", f"ruolo sconosciuto: {role}")
    building = _cell(row, "building", 32).upper() or None
    scala, interno = _cell(row, "scala", 16), _cell(row, "interno", 16)
    if (scala or interno or role in (BuildingRole.PROPRIETARIO, BuildingRole.INQUILINO)) and not (
        building
    ):
        return RowResult(line, phone, "refused", "scala, interno o ruolo senza condominio")
    return _Place(
        name=_cell(row, "name", 200) or None,
        building=building,
        scala=scala,
        interno=interno,
        role=BuildingRole(role) if role else None,
        trade=_cell(row, "trade", 64).lower() or None,
    )


def _check(line: int, row: dict[str, str]) -> _Valid | RowResult:
    raw_phone = (row.get("phone") or "").strip()
    try:
        phone = e164(raw_phone)
    except InvalidPhoneNumber:
        return RowResult(line, raw_phone or None, "refused", "numero di telefono non valido")
    kind = (row.get("kind") or "").strip().lower() or ContactKind.UNKNOWN
    if kind not in set(ContactKind):
        return RowResult(line, phone, "refused", f"tipo sconosciuto: {kind}")
    basis = (row.get("legal_basis") or "").strip().lower()
    if basis not in CONTACT_BASES:
        return RowResult(line, phone, "refused", "base giuridica mancante o non valida")
    consent_at, method = None, (row.get("consent_method") or "").strip()
    if basis == LegalBasis.CONSENT:
        try:
            consent_at = datetime.fromisoformat((row.get("consent_at") or "").strip())
        except ValueError:
            return RowResult(line, phone, "refused", "consenso senza data e ora ISO 8601")
        if consent_at.tzinfo is None:
            return RowResult(line, phone, "refused", "data del consenso senza fuso orario")
        if not method:
            return RowResult(line, phone, "refused", "consenso senza modalità di raccolta")
        consent_at = consent_at.astimezone(UTC)
    place = _check_place(line, phone, row)
    if isinstance(place, RowResult):
        return place
    return _Valid(line, phone, ContactKind(kind), LegalBasis(basis), consent_at, method, place)


def import_contacts(
    svc: Services, tenant: Tenant, rows: Iterable[dict[str, str]]
) -> list[RowResult]:
    results: list[RowResult] = []
    valid: list[_Valid] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        checked = _check(line, row)
        if isinstance(checked, RowResult):
            results.append(checked)
        elif checked.phone in seen:
            results.append(RowResult(line, checked.phone, "refused", "numero ripetuto nel file"))
        else:
            seen.add(checked.phone)
            valid.append(checked)
    with svc.db.session() as session:
        for accepted in valid:
            code = accepted.place.building
            if code and building_by_code(session, tenant.id, code) is None:
                results.append(
                    RowResult(
                        accepted.line, accepted.phone, "refused", f"condominio sconosciuto: {code}"
                    )
                )
                continue
            results.append(_upsert(svc, session, tenant, accepted))
    return sorted(results, key=lambda r: r.line)


def _upsert(svc: Services, session: Session, tenant: Tenant, row: _Valid) -> RowResult:
    contact = contact_by_phone(session, tenant, row.phone)
    outcome = "updated"
    if contact is None:
        contact = Contact(
            tenant_id=tenant.id,
            wa_id=row.phone.lstrip("+"),
            phone=row.phone,
            source=DataSource.IMPORT,
            consent=Consent.NONE,
        )
        session.add(contact)
        outcome = "imported"
    if contact.consent == Consent.WITHDRAWN and row.legal_basis == LegalBasis.CONSENT:
        # A list cannot override an opt-out the person gave us directly.
        return RowResult(row.line, row.phone, "refused", "il contatto ha revocato il consenso")
    contact.kind, contact.legal_basis = row.kind, row.legal_basis
    _apply_place(session, tenant, contact, row.place)
    session.flush()
    if row.legal_basis == LegalBasis.CONSENT:
        record_event(
            svc,
            session,
            tenant,
            contact,
            LedgerEvent.IMPORTED,
            channel=Channel.IMPORT,
            actor="import",
            evidence=Evidence(text=row.consent_method),
            at=row.consent_at,
        )
    return RowResult(row.line, row.phone, outcome)


def _apply_place(session: Session, tenant: Tenant, contact: Contact, place: _Place) -> None:
    # Only what the office's file gives: an empty cell changes nothing it knew.
    if place.name:
        contact.name = place.name
    if place.trade:
        contact.trade = place.trade
    if place.role == BuildingRole.FORNITORE:
        contact.kind = ContactKind.FORNITORE
    session.flush()
    if place.building:
        building = building_by_code(session, tenant.id, place.building)
        assert building is not None  # checked by the caller
        link_contact(
            session,
            contact,
            building,
            role=place.role,
            scala=place.scala,
            interno=place.interno,
            source=DataSource.IMPORT,
        )


def read_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in ("phone", "legal_basis") if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidImport(f"missing column(s): {', '.join(missing)}")
    return list(reader)
